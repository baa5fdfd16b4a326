"""`marconi-plan inspect MODEL`: per-layer state sizes and FLOP costs."""

from __future__ import annotations

from marconi.cli.common import add_format_argument, add_model_argument, dtypes_from, load_source
from marconi.cli.render import emit_json, table
from marconi.units import format_bytes

HELP = "per-layer state sizes and FLOP costs of a model"
DESCRIPTION = "Trace MODEL without allocating weights and print per-layer KV bytes per token, " \
              "fixed state bytes and FLOP polynomials."


def add_arguments(p):
    add_model_argument(p)
    p.add_argument("--layout", default="model", choices=("model", "vllm", "transformers"),
                   help="cache layout the sizes describe: model (what the model's own cache "
                        "allocates, default), vllm (d_conv - 1 conv columns, as vLLM and "
                        "SGLang), transformers (d_conv conv columns)")
    add_format_argument(p)


def run(args) -> int:
    from marconi.passes import build_cost_model   # torch import: only when needed
    dtype, state_dtype = dtypes_from(args)
    cost = build_cost_model(load_source(args), dtype=dtype, state_dtype=state_dtype,
                            layout=args.layout)
    if args.format == "json":
        emit_json(cost.to_dict())
        return 0
    print(render_table(cost))
    return 0


def render_table(cost) -> str:
    rows = [[layer.index, layer.label or layer.kind.value, layer.kv_bytes_per_token,
             layer.recurrent_state_bytes, layer.conv_state_bytes,
             layer.window if layer.window is not None else "-",
             float(layer.flops.c_n), float(layer.flops.c_nn), float(layer.flops.c_np),
             float(layer.flops.c_p)]
            for layer in cost.layers]
    headers = ["layer", "kind", "KV B/token", "recurrent B", "conv B", "window",
               "FLOPs·n", "FLOPs·n²", "FLOPs·n·p", "FLOPs·p"]
    title = (f"{cost.model}: dtype {cost.dtype}, state dtype {cost.state_dtype}, "
             f"conv dtype {cost.conv_dtype or cost.dtype}, layout {cost.layout}")
    totals = cost.flops
    summary = [
        f"KV per token:        {cost.kv_bytes_per_token:,} B",
        f"state per checkpoint: {cost.state_bytes():,} B ({format_bytes(cost.state_bytes())})",
        f"break-even:          {cost.checkpoint_break_even_tokens:,.1f} tokens of KV = "
        "one checkpoint",
        f"prefill FLOPs:       {float(totals.c_n):.4g}·n + {float(totals.c_nn):.4g}·n² + "
        f"{float(totals.c_np):.4g}·n·p + {float(totals.c_p):.4g}·p (windows uncapped)",
        f"prefill of 4096 tokens: {cost.prefill_flops(4096, 0):.4g} FLOPs",
    ]
    return table(headers, rows, title=title) + "\n\n" + "\n".join(summary)
