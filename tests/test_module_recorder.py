"""passes/module_recorder.py: ops land on the model module that ran them, including ops run
through a wrapper module that is not part of the model (transformers 5.25 with `kernels`
installed calls a mixer's scan through such a hub-kernel `Func` module)."""

import torch
from torch import nn

from marconi.passes.module_recorder import ModuleRecorder


class Func(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.__dict__["scan"] = Func()      # called, but not a registered submodule

    def forward(self, x):
        return self.scan(self.proj(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.mixer = Mixer()

    def forward(self, x):
        return self.mixer(x)


def test_a_foreign_wrappers_ops_are_its_callers():
    model = Model()
    with torch.no_grad(), ModuleRecorder(model) as rec:
        model(torch.ones(2, 4))
    records = rec.records
    assert "Func" not in records
    mixer = records["mixer"]
    assert torch.ops.aten.exp in mixer.direct_ops
    assert torch.ops.aten.exp not in records["mixer.proj"].ops
    assert records["mixer.proj"].flops == 2 * 2 * 4 * 4 and mixer.flops == 2 * 2 * 4 * 4
