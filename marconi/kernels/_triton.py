"""Optional Triton import and the choice between a Triton kernel and its PyTorch reference.

Every kernel file does `from marconi.kernels._triton import triton, tl` and defines its
`@triton.jit` kernels at module level, so that the file reads kernel → launcher → public
function → reference. Where Triton is not installed, `triton` and `tl` are placeholders:
the module still imports (the references run with CPU PyTorch alone) and launching a kernel
raises an ImportError that says what to install. vLLM solves the same problem with
placeholder modules (`vllm/triton_utils/importing.py`); this is a smaller version.
"""

from __future__ import annotations

import importlib.util
import os

import torch

INSTALL_HINT = ("marconi.kernels: the Triton kernels need the `triton` package "
                "(`pip install triton`, Linux with a CUDA GPU, or TRITON_INTERPRET=1 on CPU); "
                "the *_ref functions run with PyTorch alone")


def triton_available() -> bool:
    """Whether `import triton` would succeed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (`TRITON_INTERPRET=1`).

    Triton reads the variable when a kernel is decorated, i.e. when a kernel module is
    first imported; set it before importing `marconi.kernels.*` (tests do so in a subprocess).
    """
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether the Triton path serves these tensors: all on CUDA (or all on CPU under the
    interpreter) and Triton installed. Otherwise callers take the `*_ref` path."""
    present = [t for t in tensors if t is not None]
    if not present or not triton_available():
        return False
    if all(t.is_cuda for t in present):
        return True
    return interpreting() and all(t.device.type == "cpu" for t in present)


class _MissingKernel:
    """Stands in for a `@triton.jit` function when Triton is missing; fails on launch."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")

    def __getitem__(self, grid):
        raise ImportError(f"{INSTALL_HINT} (kernel {self.__name__})")

    def __call__(self, *args, **kwargs):
        raise ImportError(f"{INSTALL_HINT} (kernel {self.__name__})")


class _TritonPlaceholder:
    """Enough of the `triton` module for kernel files to import: `jit` and `cdiv`."""

    @staticmethod
    def jit(fn=None, **_kwargs):
        if fn is None:
            return _MissingKernel
        return _MissingKernel(fn)

    @staticmethod
    def cdiv(a: int, b: int) -> int:
        return -(-a // b)

    @staticmethod
    def next_power_of_2(n: int) -> int:
        return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


class _LanguagePlaceholder:
    """`tl.constexpr` and dtype names used in signatures; anything else fails on use."""

    @staticmethod
    def constexpr(value=None):
        return value

    def __getattr__(self, name):
        raise ImportError(f"{INSTALL_HINT} (triton.language.{name})")


if triton_available():
    import triton  # noqa: F401  (re-exported)
    import triton.language as tl  # noqa: F401
else:
    triton = _TritonPlaceholder()
    tl = _LanguagePlaceholder()

__all__ = ["INSTALL_HINT", "interpreting", "tl", "triton", "triton_available", "use_triton"]
