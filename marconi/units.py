"""Byte sizes and dtypes: parsing at the edge, formatting for reports."""

from __future__ import annotations

import enum
import math
import re

from marconi.errors import CapacityError, SpecError

_BINARY = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DECIMAL = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_CAPACITY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_capacity(text: str | int | float, where: str = "capacity") -> int:
    """Parse a capacity into bytes.

    Accepts a plain number of bytes (``4e10``, ``1073741824``), binary units (``40GiB``,
    ``512MiB``) and decimal units (``40GB`` = 40·10⁹). Units are case-insensitive.
    """
    if isinstance(text, bool):
        raise CapacityError(where, f"expected a byte count such as 40GiB, got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _CAPACITY_RE.match(str(text))
        if not m:
            raise CapacityError(
                where, f"not a capacity: {text!r}; expected a number of bytes "
                "or a number with a unit, e.g. 40GiB, 512MiB, 40GB, 4e10")
        value, unit = float(m.group(1)), m.group(2).lower()
    scale = _BINARY.get(unit) or _DECIMAL.get(unit) or (1 if unit == "" else None)
    if scale is None:
        known = ", ".join(["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"])
        raise CapacityError(where, f"unknown unit {unit!r} in {text!r}; expected one of {known}")
    nbytes = value * scale
    if not math.isfinite(nbytes) or nbytes <= 0:
        raise CapacityError(where, f"capacity must be positive, got {text!r}")
    if nbytes < 1:
        raise CapacityError(where, f"capacity below one byte: {text!r}")
    return int(round(nbytes))


def format_bytes(nbytes: float) -> str:
    """Human-readable binary size: ``1.50 GiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{int(nbytes)} B"


class DType(enum.Enum):
    """Storage dtypes a cache can hold states and KV in."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT8 = "float8"
    INT8 = "int8"

    @property
    def nbytes(self) -> int:
        return {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1, "int8": 1}[self.value]

    @property
    def torch_name(self) -> str:
        return {"float8": "float8_e4m3fn"}.get(self.value, self.value)


_DTYPE_ALIASES = {
    "float32": DType.FLOAT32, "fp32": DType.FLOAT32, "f32": DType.FLOAT32,
    "bfloat16": DType.BFLOAT16, "bf16": DType.BFLOAT16,
    "float16": DType.FLOAT16, "fp16": DType.FLOAT16, "half": DType.FLOAT16,
    "float8": DType.FLOAT8, "fp8": DType.FLOAT8, "float8_e4m3fn": DType.FLOAT8,
    "int8": DType.INT8,
}


def parse_dtype(text: object, where: str) -> DType:
    """Parse a dtype name (``bfloat16``, ``bf16``, ``torch.float32`` …)."""
    if isinstance(text, DType):
        return text
    name = str(text).strip().lower().removeprefix("torch.")
    if not isinstance(text, str) or name not in _DTYPE_ALIASES:
        known = ", ".join(d.value for d in DType)
        raise SpecError(where, f"unknown dtype {text!r}; expected one of {known}")
    return _DTYPE_ALIASES[name]
