"""Record, per module call path, the ops a forward pass dispatches and the FLOPs they cost.

`ModuleRecorder` is a TorchDispatchMode plus global forward hooks. It keeps a stack of
the modules being called, named by their call path (`model.layers.3.mixer`), so that a
module shared by several layers (Zamba2's shared transformer) is recorded once per call
site. For each path it keeps:

- `direct_ops`: op packets dispatched while it was the innermost module;
- `ops`: op packets dispatched anywhere inside it;
- `flops`: FLOPs inside it, counted by torch's flop registry (what FlopCounterMode uses);
- `order`: when it first dispatched an op (execution order).
"""

from __future__ import annotations

import collections
import dataclasses

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


@dataclasses.dataclass
class PathRecord:
    ops: set = dataclasses.field(default_factory=set)
    direct_ops: set = dataclasses.field(default_factory=set)
    flops: int = 0
    order: int = -1
    module: nn.Module | None = None


class ModuleRecorder(TorchDispatchMode):
    """Use as `with ModuleRecorder(model) as rec: model(...)`; then read `rec.records`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.records: dict[str, PathRecord] = collections.defaultdict(PathRecord)
        self._stack: list[tuple[nn.Module, str]] = []
        self._names = {id(m): name for name, m in model.named_modules()}
        self._children = {(id(parent), id(child)): name for parent in model.modules()
                          for name, child in parent.named_children()}
        self._handles = []
        self._counter = 0

    # ------------------------------------------------------------ module stack
    def _path(self, module: nn.Module) -> str:
        if not self._stack:
            return self._names.get(id(module), type(module).__name__)
        parent, parent_path = self._stack[-1]
        child = self._children.get((id(parent), id(module)))
        if child is None:
            for name, sub in parent.named_modules():
                if sub is module:
                    child = name
                    break
        if child is None:
            return self._names.get(id(module), type(module).__name__)
        return f"{parent_path}.{child}" if parent_path else child

    def _pre(self, module, args):
        if id(module) not in self._names:
            # not one of the model's modules: a wrapper called inside one (transformers
            # 5.25, with PyPI's `kernels` installed, runs a mixer's scan and conv through
            # a hub-kernel `Func` module that no module owns); its ops are the caller's
            return
        path = self._path(module)
        self._stack.append((module, path))
        self.records[path].module = module

    def _post(self, module, args, output):
        if self._stack and self._stack[-1][0] is module:
            self._stack.pop()

    def __enter__(self):
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._pre),
                         nn.modules.module.register_module_forward_hook(self._post)]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack = []
        return super().__exit__(*exc)

    # ------------------------------------------------------------ dispatch
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        flops = 0
        if packet in flop_registry:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
        if self._stack:
            _, inner = self._stack[-1]
            rec = self.records[inner]
            rec.direct_ops.add(packet)
            for _, path in self._stack:
                rec = self.records[path]
                rec.ops.add(packet)
                rec.flops += flops
                if rec.order < 0:
                    rec.order = self._counter
                    self._counter += 1
        return out


def is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def matmul_packets() -> frozenset:
    aten = torch.ops.aten
    return frozenset({aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.matmul, aten.linear,
                      aten.einsum, aten.convolution, aten._convolution})
