"""Cache layouts: how an engine stores the states whose shapes the model defines.

The passes measure the cache the model itself allocates ("model" layout). An engine may
keep the same state differently: vLLM and SGLang keep d_conv - 1 conv columns and a
configurable recurrent-state dtype, transformers 5.x keeps d_conv columns and float32
recurrent state. A layout re-sizes the measured conv state from its kernel width.
"""

from __future__ import annotations

import dataclasses

from marconi.errors import SpecError


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    conv_columns: str          # "model": as allocated; "kernel": d_conv; "kernel-1": d_conv - 1
    description: str

    def conv_width(self, allocated: int, kernel: int) -> int:
        """Columns of conv state this layout keeps for a conv of `kernel` taps."""
        return {"model": allocated, "kernel": kernel, "kernel-1": kernel - 1}[self.conv_columns]


LAYOUTS: dict[str, Layout] = {}


def _register(layout: Layout) -> None:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name} registered twice")
    LAYOUTS[layout.name] = layout


_register(Layout("model", "model", "what the model's own cache allocates"))
_register(Layout("vllm", "kernel-1", "vLLM/SGLang: d_conv - 1 conv columns"))
_register(Layout("transformers", "kernel", "transformers 5.x: d_conv conv columns"))


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise SpecError("layout", f"unknown layout {name!r}; expected one of "
                        f"{', '.join(LAYOUTS)}") from None
