"""TTFT model: prefill FLOPs over an effective device rate, plus a fixed overhead.

    ttft_ms(n new tokens, p cached) = overhead_ms + prefill_flops(n, p) / flops_per_ms

Like the paper's TTFT (background/marconi.md §6.2) this ignores queueing and the cost of
obtaining states; unlike its lookup table it charges the suffix's attention over the cached
prefix (the cost model's n·p term).

Profiles:

- ``jamba-1.5-mini-4xa100`` (default): calibrated to the table the Marconi artifact ships
  (Jamba-1.5-Mini on vLLM, 4×A100-40GB), which after its own smoothing is
  ≈ 17.8 ms + 52.96 ms per 1K tokens (background/marconi.md §5). The passes trace
  examples/models/jamba-1.5-mini.yaml to 23.16 GFLOPs per prefilled token (its linear
  term; 12B active parameters), so the device runs 23.16e12 FLOPs in 52.96 ms: an
  effective 4.37e14 FLOP/s (35 % of the 4×312 TFLOP/s bf16 peak). A model's TTFT is its
  own prefill FLOPs at that rate.
- ``h100``: one H100 SXM at the same fraction of its 989 TFLOP/s dense bf16 peak and the
  same overhead. An assumption, not a measurement: use it only to compare policies.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel

JAMBA_FLOPS_PER_TOKEN = 23_159_898_112.0   # c_n of examples/models/jamba-1.5-mini.yaml
_JAMBA_MS_PER_1K = 52.96                   # artifact table after smoothing
_JAMBA_RATE = JAMBA_FLOPS_PER_TOKEN * 1000 / _JAMBA_MS_PER_1K      # FLOP per ms
_JAMBA_MFU = _JAMBA_RATE * 1e3 / (4 * 312e12)


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    name: str
    overhead_ms: float
    flops_per_ms: float
    source: str

    def ttft_ms(self, cost: CostModel, new_tokens, cached_tokens):
        """TTFT of prefilling `new_tokens` after `cached_tokens` (scalars or arrays)."""
        n = np.asarray(new_tokens, dtype=np.float64)
        p = np.asarray(cached_tokens, dtype=np.float64)
        return self.overhead_ms + cost.prefill_flops(n, p) / self.flops_per_ms


DEVICES = {
    "jamba-1.5-mini-4xa100": DeviceProfile(
        "jamba-1.5-mini-4xa100", 17.8, _JAMBA_RATE,
        "calibrated: Marconi artifact TTFT table (Jamba-1.5-Mini), 17.8 ms + 52.96 ms/1K tokens"),
    "h100": DeviceProfile(
        "h100", 17.8, 989e12 * _JAMBA_MFU / 1e3,
        f"assumed: H100 SXM dense bf16 peak × {_JAMBA_MFU:.0%} (the Jamba profile's)"),
}


def get_device(name: str) -> DeviceProfile:
    try:
        return DEVICES[name]
    except KeyError:
        raise UserError("device", f"unknown device {name!r}; expected one of "
                        f"{', '.join(sorted(DEVICES))}") from None
