"""Analysis passes over one traced layer (`passes.trace.TracedLayer`).

Each pass reads the graph and writes its result into `node.meta` under a `marconi.` key:

- `classify_layer`: which LayerKind the layer is, from the ops it calls
  (`node.meta["marconi.kind"]` on the deciding node);
- `annotate_state`: per cache-tensor input, its role (kv / recurrent / conv), bytes per
  token or fixed bytes from `meta['val']` shapes, window cap, conv kernel width
  (`node.meta["marconi.state"]` on the placeholder);
- `FlopInterpreter`: runs the graph on meta tensors at one (n, p) and stores each node's
  FLOPs (`node.meta["marconi.flops"]`), counted by torch's FlopCounterMode formulas
  (plus ours for the `marconi::` ops and CPU SDPA).

Op → kind rules live in the `OP_RULES` registry; a layer whose ops match no rule raises
UnsupportedModelError naming the module and the ops it could not classify.
"""

from __future__ import annotations

import collections
import dataclasses

import sympy
import torch
from torch.fx import GraphModule, Interpreter, Node
from torch.utils.flop_counter import FlopCounterMode

from marconi.errors import UnsupportedModelError
from marconi.layers import LayerKind
from marconi.passes import ops  # noqa: F401  (registers torch.ops.marconi.*)

aten = torch.ops.aten


@dataclasses.dataclass(frozen=True)
class OpRule:
    kind: LayerKind
    state_arg: int | None      # index of the recurrent-state argument, None for attention


OP_RULES: dict[object, OpRule] = {}


def register_op_kind(packet, kind: LayerKind, state_arg: int | None = None) -> None:
    """Declare that a layer calling op `packet` is of `kind` (refuses duplicates)."""
    if packet in OP_RULES:
        raise ValueError(f"op {packet} registered twice")
    OP_RULES[packet] = OpRule(kind, state_arg)


register_op_kind(torch.ops.marconi.causal_attention, LayerKind.ATTENTION)
register_op_kind(torch.ops.marconi.selective_scan, LayerKind.MAMBA1, 5)
register_op_kind(torch.ops.marconi.ssd_scan, LayerKind.MAMBA2, 5)
register_op_kind(torch.ops.marconi.gated_delta_scan, LayerKind.GDN, 5)
register_op_kind(torch.ops.marconi.kda_scan, LayerKind.KDA, 5)
register_op_kind(torch.ops.marconi.linear_attention_scan, LayerKind.LINEAR_ATTENTION, 4)

MATMULS = frozenset({aten.linear, aten.mm, aten.addmm, aten.bmm, aten.matmul, aten.baddbmm,
                     aten.einsum})
CONVS = frozenset({aten.convolution, aten.conv1d, aten._convolution})
ROUTERS = frozenset({aten.topk})
# shape, dtype and indexing plumbing: left out when listing the ops a layer calls
PLUMBING = frozenset({aten.view, aten.reshape, aten.unsqueeze, aten.squeeze, aten.slice,
                       aten.select, aten.transpose, aten.permute, aten.expand, aten.to,
                       aten._to_copy, aten.clone, aten.contiguous, aten.sym_size, aten.t,
                       aten.split, aten.split_with_sizes, aten.chunk, aten.narrow,
                       aten.alias, aten.detach, aten.type_as})

_BIG = 10 ** 12     # substituted for every length symbol to find window caps


@dataclasses.dataclass(frozen=True)
class StateInfo:
    name: str
    role: str                  # "kv", "recurrent" or "conv"
    bytes_per_token: int = 0   # kv: bytes per cached token
    fixed_bytes: int = 0       # recurrent / conv: bytes per sequence
    window: int | None = None  # kv: tokens held at most
    conv_kernel: int = 0       # conv: taps of the conv the state feeds
    conv_columns: int = 0      # conv: time columns the state keeps (last dim)


@dataclasses.dataclass(frozen=True)
class Classification:
    kind: LayerKind
    label: str
    window: int | None = None


def _packet(node: Node):
    target = node.target
    return getattr(target, "overloadpacket", target)


def _module_of(node: Node) -> str:
    """`path (Class)` of the innermost module a node was traced in."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "<top>"
    path, cls = list(stack.values())[-1]
    return f"{path or '<top>'} ({str(cls).rsplit('.', 1)[-1]})"


def _layer_module(node: Node) -> str:
    path, cls = list(node.meta["nn_module_stack"].values())[1]
    return f"{path} ({str(cls).rsplit('.', 1)[-1]})"


def _reaches(start: Node, targets: frozenset) -> Node | None:
    """First node (breadth-first along users) calling one of `targets`, iteratively."""
    seen, queue = {start}, collections.deque([start])
    while queue:
        node = queue.popleft()
        for user in node.users:
            if user in seen:
                continue
            if user.op == "call_function" and _packet(user) in targets:
                return user
            seen.add(user)
            queue.append(user)
    return None


def state_placeholders(gm: GraphModule, n_states: int) -> list[Node]:
    """The cache-tensor inputs: placeholders after x and positions."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 2 + n_states:
        raise AssertionError(f"expected {2 + n_states} inputs, graph has {len(placeholders)}")
    return placeholders[2:]


# ---------------------------------------------------------------- classification

def classify_layer(gm: GraphModule, n_states: int, where: str) -> Classification:
    """Kind of the traced layer from its ops; writes meta['marconi.kind']."""
    found = [(n, OP_RULES[_packet(n)]) for n in gm.graph.nodes
             if n.op == "call_function" and _packet(n) in OP_RULES]
    kinds = {rule.kind for _, rule in found}
    if len(kinds) > 1:
        raise UnsupportedModelError(where, "one layer calls ops of several kinds ("
                                    + ", ".join(sorted(k.value for k in kinds))
                                    + "); expected one mixer per layer")
    states = state_placeholders(gm, n_states)
    if found:
        node, rule = found[0]
        result = _classify_rule(node, rule, states)
    else:
        result = _classify_by_structure(gm, states, where)
        node = next(n for n in gm.graph.nodes if n.op == "output")
    node.meta["marconi.kind"] = result
    return result


def _classify_rule(node: Node, rule: OpRule, states: list[Node]) -> Classification:
    if rule.kind is not LayerKind.ATTENTION:
        return Classification(rule.kind, rule.kind.value)
    window = int(node.args[3]) if len(node.args) > 3 else 0
    # MLA caches a latent that is up-projected (a matmul) before it reaches attention
    attention_or_matmul = MATMULS | {torch.ops.marconi.causal_attention}
    first_uses = [_reaches(s, attention_or_matmul) for s in states]
    latent = any(u is not None and _packet(u) in MATMULS for u in first_uses)
    if latent:
        return Classification(LayerKind.MLA, LayerKind.MLA.value)
    if window:
        return Classification(LayerKind.ATTENTION, "sliding_attention", window)
    return Classification(LayerKind.ATTENTION, LayerKind.ATTENTION.value)


def _classify_by_structure(gm: GraphModule, states: list[Node], where: str) -> Classification:
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    packets = {_packet(n) for n in calls}
    if states:
        if packets & CONVS and all(_reaches(s, CONVS) is not None for s in states):
            return Classification(LayerKind.SHORT_CONV, LayerKind.SHORT_CONV.value)
        ops_seen = sorted(str(p) for p in packets
                          if isinstance(p, torch._ops.OpOverloadPacket) and p not in PLUMBING)
        # the layer module: the outermost module below the trace wrapper, seen from any op
        inner = [n for n in calls if len(n.meta.get("nn_module_stack") or {}) >= 2]
        module = _layer_module(inner[0]) if inner else "<top>"
        raise UnsupportedModelError(where, f"module {module} keeps a cache but calls no op the "
                                    f"passes can classify (ops: {', '.join(ops_seen)}); "
                                    f"expected one of {', '.join(str(p) for p in OP_RULES)}")
    if packets & ROUTERS:
        return Classification(LayerKind.MOE, LayerKind.MOE.value)
    if packets & MATMULS:
        return Classification(LayerKind.MLP, LayerKind.MLP.value)
    raise UnsupportedModelError(where, "layer calls no matmul, conv, attention or scan op; "
                                "cannot classify it")


# ---------------------------------------------------------------- state sizes

def annotate_state(gm: GraphModule, names: tuple[str, ...], growing: frozenset[str],
                   where: str) -> dict[str, StateInfo]:
    """Per cache tensor: role and bytes from the placeholder's symbolic `meta['val']`."""
    states = state_placeholders(gm, len(names))
    outputs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    scan_targets = frozenset(p for p, rule in OP_RULES.items() if rule.state_arg is not None)
    infos = {}
    for i, (name, node) in enumerate(zip(names, states)):
        val = node.meta["val"]
        itemsize = val.element_size()
        if name in growing:
            dims = [_expr(s) for s in val.shape]
            fixed = [int(d) for d in dims if not d.free_symbols]
            per_token = itemsize * _prod(fixed)
            out_len = [_expr(s) for s in outputs[1 + i].meta["val"].shape]
            grown = next(d for d in out_len if d.free_symbols)
            cap = grown.subs({s: _BIG for s in grown.free_symbols})
            window = int(cap) if cap < _BIG else None
            info = StateInfo(name, "kv", bytes_per_token=per_token, window=window)
        else:
            nbytes = itemsize * _prod(int(s) for s in val.shape)
            scan = _reaches(node, scan_targets)
            conv = _reaches(node, CONVS)
            if scan is not None and _feeds_arg(node, scan, OP_RULES[_packet(scan)].state_arg):
                info = StateInfo(name, "recurrent", fixed_bytes=nbytes)
            elif conv is not None:
                kernel = int(conv.args[1].meta["val"].shape[-1])
                info = StateInfo(name, "conv", fixed_bytes=nbytes, conv_kernel=kernel,
                                 conv_columns=int(val.shape[-1]))
            else:
                raise UnsupportedModelError(
                    where, f"cache tensor {name!r} of module {_module_of(node)} feeds neither "
                    "a registered scan nor a conv; cannot tell what it holds")
        node.meta["marconi.state"] = info
        infos[name] = info
    return infos


def _feeds_arg(source: Node, consumer: Node, index: int) -> bool:
    """Whether `source` reaches argument `index` of `consumer` (through any ops)."""
    arg = consumer.args[index]
    seen, stack = set(), [arg]
    while stack:
        node = stack.pop()
        if node is source:
            return True
        if not isinstance(node, Node) or node in seen:
            continue
        seen.add(node)
        stack.extend(a for a in node.all_input_nodes)
    return False


def _expr(size) -> sympy.Expr:
    return sympy.sympify(size.node.expr if isinstance(size, torch.SymInt) else int(size))


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# ---------------------------------------------------------------- FLOPs

class FlopInterpreter(Interpreter):
    """Runs the graph on meta tensors and records each node's FLOPs in meta['marconi.flops']."""

    def __init__(self, gm: GraphModule):
        super().__init__(gm)
        self.total = 0

    def run_node(self, n: Node):
        if n.op != "call_function":
            return super().run_node(n)
        with FlopCounterMode(display=False) as counter:
            result = super().run_node(n)
        flops = counter.get_total_flops()
        n.meta["marconi.flops"] = flops
        self.total += flops
        return result


def count_flops(gm: GraphModule, inputs) -> int:
    interp = FlopInterpreter(gm)
    interp.run(*inputs)
    return interp.total
