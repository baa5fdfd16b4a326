"""marconi.passes: build a hybrid model without memory, trace it, derive a CostModel.

Entry point: `build_cost_model(source, dtype=None, state_dtype=None, layout="model")`.
"""


def build_cost_model(source, dtype=None, state_dtype=None, layout="model"):
    """CostModel for a `ModelSpec` (model.yaml) or `HFConfig` (config.json).

    `dtype`/`state_dtype` (`marconi.units.DType`) override the spec's storage dtypes;
    `layout` is "model" (what the model's own cache allocates) or an engine layout.
    """
    from marconi.passes.analyze import build_cost_model as _build
    return _build(source, dtype=dtype, state_dtype=state_dtype, layout=layout)
