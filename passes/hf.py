"""Hugging Face configs: build the real transformers architecture on the meta device,
classify its modules from the ops they dispatch, and derive the same CostModel.

Route (no weights, no memory):

1. `AutoModelForCausalLM.from_config` under `torch.device("meta")`, attention through our
   `marconi_causal` interface function, MoE experts through transformers' `batched_mm`
   (exactly top_k experts per token, whatever the routing), scans substituted by our ops
   (`passes.hf_kernels`);
2. sizes: prefills of a few lengths with the model's own cache (transformers'
   DynamicCache); the bytes of its `keys`/`values`, `recurrent_states` and `conv_states`
   per layer (`passes.state_size`). By default this is what transformers allocates
   (float32 recurrent state, conv state in the model dtype with d_conv columns);
   `state_dtype` and an engine `layout` re-size it;
3. units: each module that dispatches a scan or attention op is a mixer unit; the other
   FLOP-carrying modules of a decoder layer are MLP (two or more matmul modules) or MoE
   (a top-k router) units; a lone projection is folded into the nearest mixer unit of its
   layer. A layer that keeps a cache but dispatches no known op fails, naming the module
   and the ops it dispatched;
4. FLOPs: per unit at the sample points of `passes.fit`, solved for the exact polynomial.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import re

import torch

from marconi.errors import SpecError, UnsupportedModelError
from marconi.layers import LayerKind, show_int
from marconi.passes.cost_model import CostModel, FlopPoly
from marconi.passes.fit import FitError, fit_many
from marconi.passes.graph_passes import OP_RULES, ROUTERS, PLUMBING
from marconi.passes.hf_kernels import ATTENTION_NAME, register_attention, substitute_kernels
from marconi.passes.layer_analysis import layer_cost
from marconi.passes.layout import get_layout
from marconi.passes.module_recorder import ModuleRecorder, is_under, matmul_packets
from marconi.passes.state_size import CacheTensor, LayerSizes, measure_sizes
from marconi.spec import HFConfig, require_transformers, transformers_config
from marconi.units import DType, parse_dtype

log = logging.getLogger(__name__)

_ROLES = {"keys": "kv", "values": "kv", "conv_states": "conv", "recurrent_states": "recurrent"}
_PROBE = (3, 3)          # (n, p) of the run that finds the units


@dataclasses.dataclass(frozen=True)
class Unit:
    """One row of the CostModel: a mixer or feed-forward module of one decoder layer."""

    path: str
    kind: LayerKind
    layer: int                              # decoder layer index (its cache layer)
    extra: tuple[str, ...] = ()             # lone projections folded into this unit


def build_hf_cost_model(source: HFConfig, dtype: DType | None = None,
                        state_dtype: DType | None = None, layout: str = "model") -> CostModel:
    where = source.path or source.name
    try:
        with _quiet_transformers():
            return _build(source, dtype, state_dtype, layout, where)
    except UnsupportedModelError as e:
        if e.where.startswith(where):
            raise
        # raised from inside the model's forward (e.g. by our attention function)
        raise UnsupportedModelError(where, f"{e.where}: {e.message}") from e
    except (RuntimeError, TypeError, OverflowError) as e:
        # torch sizing a tensor past int64 ("Storage size calculation overflowed",
        # "Overflow when unpacking long long"): a typo in a dimension of the config
        if "overflow" not in str(e).lower():
            raise
        field, value = _largest_int(source.config)
        raise SpecError(f"{where}: {field}", f"{show_int(value)}; torch cannot size the "
                        "model's tensors (int64 overflow); expected a real model's "
                        "dimension") from e


def _build(source: HFConfig, dtype: DType | None, state_dtype: DType | None, layout: str,
           where: str) -> CostModel:
    runner = HFRunner(source, dtype)
    units = runner.units()
    lay = get_layout(layout)
    sizes = measure_sizes(runner.cache_tensors, lay, where)
    flops = _fit(runner, units, where)
    measured_state = runner.recurrent_dtype
    scale_state = (state_dtype.nbytes / measured_state.itemsize) if state_dtype and \
        measured_state else 1.0
    scale_kv = runner.kv_scale
    layers = []
    for index, unit in enumerate(units):
        size = sizes.get(unit.layer, LayerSizes())
        kv = size.kv_bytes_per_token if unit.kind.has_kv else 0
        recurrent = size.recurrent_state_bytes if unit.kind.is_recurrent else 0
        conv = size.conv_state_bytes if unit.kind.is_recurrent else 0
        poly = flops[unit.path]
        kind = unit.kind
        if kind is LayerKind.ATTENTION and poly.c_p:
            kind = LayerKind.MLA        # keys up-projected from a cached latent every prefill
        label = "sliding_attention" if kind is LayerKind.ATTENTION and size.window else \
            kind.value
        layers.append(layer_cost(index, kind, label, unit.path, LayerSizes(
            int(kv * scale_kv), int(recurrent * scale_state), conv,
            size.window if unit.kind.has_kv else None), poly))
    _check_every_cache_tensor_claimed(units, sizes, where)
    state_name = state_dtype.value if state_dtype else \
        (_dtype_name(measured_state) or runner.dtype.value)
    return CostModel(model=source.name, dtype=runner.dtype.value, state_dtype=state_name,
                     layers=tuple(layers), conv_dtype=_dtype_name(runner.conv_dtype),
                     layout=layout, source_fingerprint=source.fingerprint(),
                     notes=(f"transformers {runner.transformers_version}, "
                            f"{runner.model_class}", ))


class HFRunner:
    """The transformers model of a config.json on the meta device, with our kernels."""

    def __init__(self, source: HFConfig, dtype: DType | None):
        transformers = require_transformers(source.path or source.name)
        self.where = source.path or source.name
        self.transformers_version = transformers.__version__
        self.dtype = dtype or _config_dtype(source)
        compute = getattr(torch, self.dtype.torch_name)
        self.kv_scale = 1.0
        if compute.itemsize < 2:        # 8-bit KV: build in bfloat16, count KV at 1 byte
            self.kv_scale = self.dtype.nbytes / 2
            compute = torch.bfloat16
        # from_config writes the dtype and attention implementation into the config it gets
        config = copy.deepcopy(source.transformers_config) \
            if source.transformers_config is not None \
            else transformers_config(source.config, self.where)
        register_attention()
        try:
            with torch.device("meta"):
                self.model = transformers.AutoModelForCausalLM.from_config(
                    config, dtype=compute, attn_implementation=ATTENTION_NAME,
                    experts_implementation="batched_mm")
        except (ValueError, KeyError) as e:
            raise UnsupportedModelError(self.where, f"model_type {source.model_type!r}: no "
                                        f"causal-LM architecture in transformers: "
                                        f"{str(e).splitlines()[0]}") from e
        # never trained; and torch's module tracker (FlopCounterMode) cannot hook parameters
        # handed to a hub-kernel `Func` module (transformers 5.25 with `kernels`) under no_grad
        self.model.eval().requires_grad_(False)
        self._forward_args = set(inspect.signature(self.model.forward).parameters)
        self.model_class = type(self.model).__name__
        self.n_layers = getattr(config, "num_hidden_layers", None) or \
            getattr(config.get_text_config(), "num_hidden_layers")
        self.layers_path = self._find_layers()
        self.recurrent_dtype = None
        self.conv_dtype = compute
        self._prefilled = {}

    # ------------------------------------------------------------ running
    def _find_layers(self) -> str:
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == self.n_layers:
                return name
        raise UnsupportedModelError(self.where, f"{type(self.model).__name__}: no list of "
                                    f"{self.n_layers} decoder layers found")

    def _ids(self, n: int) -> torch.Tensor:
        return torch.zeros(1, n, dtype=torch.long, device="meta")

    def _forward(self, n: int, cache=None):
        """Prefill n tokens after `cache` (None: from nothing); returns the updated cache."""
        name = cache_keyword(self._forward_args)
        kwargs = {name: cache} if cache is not None else {}
        out = self.model(input_ids=self._ids(n), use_cache=True, **kwargs)
        return getattr(out, name)

    def cache_after(self, length: int):
        with torch.no_grad(), substitute_kernels(self.model):
            return self._forward(length)

    def record(self, n: int, p: int) -> ModuleRecorder:
        """Ops and FLOPs per module of a prefill of n tokens after p cached ones."""
        with torch.no_grad(), substitute_kernels(self.model):
            if p and p not in self._prefilled:
                self._prefilled[p] = self._forward(p)
            # the forward updates a cache in place: start each run from a copy (meta: free)
            cache = copy.deepcopy(self._prefilled[p]) if p else None
            with ModuleRecorder(self.model) as recorder:
                self._forward(n, cache)
        return recorder

    def cache_tensors(self, length: int):
        cache = self.cache_after(length)
        for index, layer in enumerate(cache.layers):
            for attr, role in _ROLES.items():
                value = getattr(layer, attr, None)
                items = value.items() if isinstance(value, dict) else [(None, value)]
                for key, tensor in items:
                    if not isinstance(tensor, torch.Tensor):
                        continue
                    kernel = 0
                    if role == "conv":
                        kernel = (getattr(layer, "conv_kernel_size", {}) or {}).get(key, 0)
                    if role == "recurrent":
                        self.recurrent_dtype = tensor.dtype
                    if role == "conv":
                        self.conv_dtype = tensor.dtype
                    name = attr if key is None else f"{attr}[{key}]"
                    yield CacheTensor(index, name, role, tensor, int(kernel or 0))

    # ------------------------------------------------------------ units
    def layer_of(self, path: str) -> int | None:
        m = re.match(re.escape(self.layers_path) + r"\.(\d+)(\.|$)", path)
        return int(m.group(1)) if m else None

    def units(self) -> list[Unit]:
        rec = self.record(*_PROBE).records
        mixers = {}
        for path, r in rec.items():
            rules = {OP_RULES[p].kind for p in r.direct_ops if p in OP_RULES}
            if len(rules) > 1:
                raise UnsupportedModelError(self.where, f"module {path} calls ops of several "
                                            f"kinds: {sorted(k.value for k in rules)}")
            if rules and self.layer_of(path) is not None:
                mixers[path] = rules.pop()
        roles = self._cache_roles()
        mixers.update(self._short_convs(rec, mixers, roles))
        units = [Unit(path, kind, self.layer_of(path)) for path, kind in mixers.items()]
        units += self._feed_forward_units(rec, mixers)
        units = self._fold_projections(units, rec)
        units.sort(key=lambda u: rec[u.path].order)
        for index, layer_roles in roles.items():
            kinds = {u.kind for u in units if u.layer == index}
            if layer_roles & {"recurrent", "conv"} and not any(k.is_recurrent for k in kinds):
                raise UnsupportedModelError(self.where, self._unknown(index, rec))
        return units

    def _cache_roles(self) -> dict[int, set[str]]:
        roles: dict[int, set[str]] = {}
        for c in self.cache_tensors(2):
            roles.setdefault(c.layer, set()).add(c.role)
        return roles

    def _short_convs(self, rec, mixers, roles) -> dict[str, LayerKind]:
        """A layer that keeps only a conv state and calls a conv but no scan: a gated short
        convolution (LFM2). The unit is the module that runs the conv."""
        conv_ops = {torch.ops.aten.convolution, torch.ops.aten._convolution}
        out = {}
        for index, layer_roles in roles.items():
            if layer_roles != {"conv"} or any(self.layer_of(m) == index for m in mixers):
                continue
            convs = sorted((p for p, r in rec.items() if self.layer_of(p) == index
                            and r.direct_ops & conv_ops), key=lambda p: rec[p].order)
            if convs:
                path = convs[0]
                if isinstance(rec[path].module, torch.nn.Conv1d):
                    path = path.rsplit(".", 1)[0]
                out[path] = LayerKind.SHORT_CONV
        return out

    def _feed_forward_units(self, rec, mixers) -> list[Unit]:
        matmuls = matmul_packets()
        out = []
        for i in range(self.n_layers):
            stack = [f"{self.layers_path}.{i}"]
            while stack:
                path = stack.pop()
                inside = [p for p in rec if is_under(p, path)]
                if path in mixers or not any(rec[p].flops for p in inside):
                    continue
                if any(m for m in mixers if is_under(m, path)):
                    stack.extend(p for p in inside if p.count(".") == path.count(".") + 1)
                    continue
                children = [p for p in inside if p.count(".") == path.count(".") + 1
                            and rec[p].flops]
                if len(children) == 1 and rec[children[0]].flops == rec[path].flops:
                    stack.append(children[0])          # a wrapper: name the module inside
                    continue
                matmul_modules = [p for p in inside if rec[p].direct_ops & matmuls]
                if rec[path].ops & ROUTERS:
                    out.append(Unit(path, LayerKind.MOE, i))
                elif len(matmul_modules) >= 2:
                    out.append(Unit(path, LayerKind.MLP, i))
                else:
                    out.append(Unit(path, None, i))       # a lone projection, folded below
        return out

    def _fold_projections(self, units: list[Unit], rec) -> list[Unit]:
        lone = [u for u in units if u.kind is None]
        kept = [u for u in units if u.kind is not None]
        for u in lone:
            same = [k for k in kept if k.layer == u.layer and k.kind not in
                    (LayerKind.MLP, LayerKind.MOE)]
            if not same:
                raise UnsupportedModelError(self.where, f"module {u.path} "
                                            f"({type(rec[u.path].module).__name__}) does "
                                            "matmuls outside any mixer or MLP of its layer")
            before = [k for k in same if rec[k.path].order <= rec[u.path].order]
            target = (before or same)[-1 if before else 0]
            kept[kept.index(target)] = dataclasses.replace(target,
                                                           extra=target.extra + (u.path,))
        return kept

    def _unknown(self, index: int, rec) -> str:
        prefix = f"{self.layers_path}.{index}"
        matmuls = matmul_packets()
        candidates = [p for p, r in rec.items() if is_under(p, prefix) and p != prefix
                      and p.count(".") == prefix.count(".") + 1 and r.ops & matmuls]
        module = max(candidates, key=lambda p: len(rec[p].ops), default=prefix)
        ops = sorted(str(p) for p in rec[module].ops
                     if isinstance(p, torch._ops.OpOverloadPacket) and p not in PLUMBING)
        return (f"module {module} ({type(rec[module].module).__name__}) keeps a recurrent "
                f"or conv state but calls no op the passes can classify (ops: {', '.join(ops)}); "
                f"expected a scan the passes substitute ({', '.join(str(p) for p in OP_RULES)})")

    def unit_flops(self, units: list[Unit], n: int, p: int) -> dict[str, int]:
        rec = self.record(n, p).records
        return {u.path: rec[u.path].flops + sum(rec[e].flops for e in u.extra) for u in units}


def cache_keyword(forward_args) -> str:
    """The keyword (and output attribute) under which a transformers model takes its cache.

    transformers 5.24 renamed both `past_key_values` and the pure SSM models' (Mamba,
    Mamba2) `cache_params` to `cache`; the old names still work there but warn.
    """
    for name in ("cache", "cache_params", "past_key_values"):
        if name in forward_args:
            return name
    return "past_key_values"


def _fit(runner: HFRunner, units: list[Unit], where: str) -> dict[str, FlopPoly]:
    try:
        return fit_many(lambda n, p: runner.unit_flops(units, n, p))
    except FitError as e:
        raise UnsupportedModelError(where, f"prefill FLOPs are not a polynomial of degree "
                                    f"<= 2 in (new, cached) tokens: {e}") from e


def _check_every_cache_tensor_claimed(units, sizes, where) -> None:
    """Each decoder layer's cache goes to exactly one attention and one recurrent unit."""
    for layer, size in sizes.items():
        kinds = [u.kind for u in units if u.layer == layer]
        for what, test in (("attention", lambda k: k.has_kv), ("recurrent", lambda k:
                                                                k.is_recurrent)):
            if sum(1 for k in kinds if test(k)) > 1:
                raise UnsupportedModelError(where, f"decoder layer {layer} has several "
                                            f"{what} mixers sharing one cache entry; cannot "
                                            "split its bytes between them")
        if size.kv_bytes_per_token and not any(k.has_kv for k in kinds):
            raise UnsupportedModelError(where, f"decoder layer {layer} caches KV but no "
                                        "attention op was dispatched in it")


@contextlib.contextmanager
def _quiet_transformers():
    """transformers warns that its reference kernels are slow; here they are not run."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _largest_int(config: dict) -> tuple[str, int]:
    """(dotted field, value) of the largest integer anywhere in a config mapping."""
    best, stack = ("", 0), [("", config)]
    while stack:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            elif isinstance(value, int) and not isinstance(value, bool) and value > best[1]:
                best = (f"{prefix}{key}", value)
    return best


def _config_dtype(source: HFConfig) -> DType:
    name = source.config.get("dtype") or source.config.get("torch_dtype") or "bfloat16"
    return parse_dtype(name, f"{source.path}: torch_dtype")


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.") if dtype is not None else ""
