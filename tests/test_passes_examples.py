"""Every example spec: CostModel sizes equal the bytes the model's own cache allocates.

Two checks per example in examples/models/:
- full size: the graph route (one traced layer per distinct block) against the cache
  tensors of the whole reference model after fake prefills (meta shapes, no memory);
- tiny twin (same layer kinds, options and dtypes, tiny dims): the model RUNS with real
  weights, and its cache tensors after 5 and 9 tokens weigh exactly kv_bytes(L) +
  state_bytes(); FlopCounterMode on the real run equals prefill_flops(n, p) per layer.
"""

import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from marconi.passes import build_cost_model
from marconi.passes.analyze import ReferenceRunner
from marconi.passes.layout import get_layout
from marconi.passes.reference_model import build, spec_dtypes, tiny_spec
from marconi.passes.state_size import measure_sizes
from marconi.spec import load_model

from helpers import EXAMPLES


pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = sorted(EXAMPLES.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _spec(name):
    return load_model(EXAMPLES / name)


@functools.lru_cache(maxsize=None)
def _tiny(name):
    spec = tiny_spec(_spec(name))
    return spec, build_cost_model(spec)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in SPECS], ids=lambda n: n[:-5])
def test_full_size_sizes_equal_meta_cache_tensors(name):
    spec = _spec(name)
    cost = build_cost_model(spec)
    runner = ReferenceRunner(spec)
    sizes = measure_sizes(runner.cache_tensors, get_layout("model"), name)
    for layer in cost.layers:
        ref = sizes.get(layer.index)
        got = (layer.kv_bytes_per_token, layer.recurrent_state_bytes, layer.conv_state_bytes,
               layer.window)
        want = (ref.kv_bytes_per_token, ref.recurrent_state_bytes, ref.conv_state_bytes,
                ref.window) if ref else (0, 0, 0, None)
        assert got == want, f"layer {layer.index} ({layer.kind.value})"
    for length in (4097,):
        cache = runner.cache_after(length)
        assert cache.nbytes() == cost.kv_bytes(length) + cost.state_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in SPECS], ids=lambda n: n[:-5])
def test_tiny_twin_run_cache_bytes_exact(name):
    spec, cost = _tiny(name)
    assert [l.kind for l in spec.layers] == [l.kind for l in _spec(name).layers]
    model = build(spec, spec_dtypes(spec), seed=0)
    ids = torch.randint(0, spec.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, c5 = model(ids[:, :5])
        _, c9 = model(ids[:, 5:], c5)
    for length, cache in ((5, c5), (9, c9)):
        assert cache.nbytes() == cost.kv_bytes(length) + cost.state_bytes()
        for layer, state in zip(cost.layers, cache.layers):
            nbytes = sum(t.numel() * t.element_size() for t in state.values())
            assert nbytes == layer.kv_bytes(length) + layer.state_bytes, layer.index


@pytest.mark.parametrize("name", [p.name for p in SPECS], ids=lambda n: n[:-5])
def test_tiny_twin_flops_equal_flop_counter_on_real_run(name):
    spec, cost = _tiny(name)
    model = build(spec, spec_dtypes(spec), seed=0)
    ids = torch.zeros(1, 16, dtype=torch.long)
    for n, p in ((3, 0), (4, 11)):
        with torch.no_grad():
            cache = model(ids[:, :p])[1] if p else None
            with FlopCounterMode(display=False) as counter:
                model(ids[:, :n], cache)
        counts = counter.get_flop_counts()
        for layer in cost.layers:
            got = sum(counts.get(f"HybridLM.{layer.name}", {}).values())
            assert got == layer.prefill_flops(n, p), (layer.index, n, p)
