"""PNG plots of a results document (benchmarks.results), one figure per question.

- ``capacity-<model>.png``: token hit rate and FLOP savings against capacity, one column
  per workload, one line per policy; `infinite` (dotted) and the offline upper bound on
  FLOP savings (dashed) as reference lines. Capacity on a log axis, in GiB.
- ``ttft-<model>.png``: TTFT P50 and P95 per policy at one capacity, with no cache beside.
- ``layer-mix.png`` and ``d-state.png``: the paper's Fig. 12 on our workloads.

Matplotlib runs headless (Agg); only this module imports it.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import results as res
from benchmarks.sweep import D_STATE, LAYER_MIX

GIB = float(1 << 30)
DPI = 110
COLORS = {"vllm-all": "#d62728", "vllm-align": "#ff7f0e", "sglang": "#1f77b4",
          "marconi": "#2ca02c", "marconi-static": "#98df8a", "planned": "#9467bd"}
MARKERS = {"vllm-all": "v", "vllm-align": "^", "sglang": "s", "marconi": "o",
           "marconi-static": "D", "planned": "*"}
INFINITE_STYLE = dict(color="0.45", linestyle=":", linewidth=1.6)
BOUND_STYLE = dict(color="black", linestyle="--", linewidth=1.4)
LABELS = {"vllm-all": "vllm-all (paper's vLLM+)", "vllm-align": "vllm-align (vLLM today)",
          "sglang": "sglang (paper's SGLang+)", "marconi": "marconi (tuned α)",
          "marconi-static": "marconi-static (best fixed α)", "planned": "planned (ours)"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _style(policy: str) -> dict:
    return dict(color=COLORS.get(policy), marker=MARKERS.get(policy, "."), linewidth=1.5,
                markersize=5, label=LABELS.get(policy, policy))


def _gib_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.4g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("cache capacity (GiB, log scale)")


def _percent_axis(ax, label: str, top: float) -> None:
    """A percentage axis from 0 that shows `top` (the highest reference line) clearly."""
    ax.set_ylabel(label)
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.06 * top))
    ax.grid(True, which="major", alpha=0.3)


def _legend(fig, axes) -> float:
    """One legend for the figure, below the panels, as many columns as fit; returns the
    fraction of the figure's height it takes (the panels' bottom margin)."""
    ncol = max(2, min(5, int(fig.get_figwidth() / 2.8)))
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center",
               ncol=min(len(labels), ncol), frameon=False, fontsize=9)
    rows = -(-len(labels) // ncol)
    return (0.1 + 0.22 * rows) / fig.get_figheight()


def capacity_figure(results, model: str, out: Path) -> Path:
    """Token hit rate and FLOP savings against capacity, one column per workload."""
    plt = _pyplot()
    keys = res.workloads(results)
    fig, axes = plt.subplots(2, len(keys), figsize=(max(8.0, 3.7 * len(keys)), 7.4), squeeze=False)
    for col, w in enumerate(keys):
        ref = res.reference(results, model, w)
        inf = ref["infinite"]
        for row, metric in enumerate(("token_hit_rate", "flop_savings")):
            ax = axes[row][col]
            for p in res.policies(results):
                pts = res.curve(results, model, w, p)
                ax.plot([r["capacity_bytes"] / GIB for r in pts],
                        [100 * r[metric] for r in pts], **_style(p))
            ax.axhline(100 * inf[metric], label="infinite (no capacity limit)",
                       **INFINITE_STYLE)
            if metric == "flop_savings":
                b = res.curve(results, model, w, "bound")
                ax.plot([r["capacity_bytes"] / GIB for r in b],
                        [100 * r["upper_flop_savings"] for r in b],
                        label="offline upper bound (LP / Lagrangian)", **BOUND_STYLE)
            _gib_axis(ax)
            _percent_axis(ax, "token hit rate (%)" if metric == "token_hit_rate"
                          else "prefill FLOP savings (%)", 100 * inf[metric])
            if row == 0:
                ax.set_title(res.workload_label(results, w), fontsize=11)
    fig.suptitle(f"{model}: hit rate and FLOP savings against cache capacity", fontsize=12)
    fig.tight_layout(rect=(0, _legend(fig, axes.flat), 1, 0.97))
    return _save(fig, out / f"capacity-{model}.png")


def ttft_figure(results, model: str, out: Path) -> Path:
    """TTFT P50 / P95 per policy (and with no cache) at the suite's TTFT capacity."""
    plt = _pyplot()
    keys = res.workloads(results)
    fraction = results["suite"]["ttft_fraction"]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(8.0, 3.7 * len(keys)), 5.0), squeeze=False)
    names = res.policies(results)
    for col, w in enumerate(keys):
        ax = axes[0][col]
        ref = res.reference(results, model, w)
        rows = res.at_fraction(results, model, w, fraction)
        labels = ["no cache"] + names + ["infinite"]
        p50 = [ref["no_cache_ttft_p50_ms"]] + [rows[p]["ttft_p50_ms"] for p in names] + \
            [ref["infinite"]["ttft_p50_ms"]]
        p95 = [ref["no_cache_ttft_p95_ms"]] + [rows[p]["ttft_p95_ms"] for p in names] + \
            [ref["infinite"]["ttft_p95_ms"]]
        x = range(len(labels))
        colors = ["0.6"] + [COLORS.get(p, "0.3") for p in names] + ["0.85"]
        ax.bar([i - 0.2 for i in x], p50, width=0.4, color=colors, alpha=0.5,
               edgecolor="black", linewidth=0.5, label="P50")
        ax.bar([i + 0.2 for i in x], p95, width=0.4, color=colors, edgecolor="black",
               linewidth=0.5, label="P95")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("time to first token (ms)")
        ax.grid(True, axis="y", alpha=0.3)
        cap = next(iter(rows.values()))["capacity_bytes"] / GIB
        ax.set_title(f"{res.workload_label(results, w)}\n@ {cap:,.1f} GiB", fontsize=10)
    fig.suptitle(f"{model}: TTFT P50 (light) and P95 (dark) per policy\n(latency model "
                 "calibrated to Jamba-1.5-Mini on 4×A100)", fontsize=11)
    from matplotlib.patches import Patch
    fig.legend([Patch(facecolor="0.5", alpha=0.5, edgecolor="black"),
                Patch(facecolor="0.5", edgecolor="black")], ["P50", "P95"],
               loc="upper right", ncol=2, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, out / f"ttft-{model}.png")


def variant_figure(results, study: str, out: Path) -> Path | None:
    """Fig. 12 of the paper: hit rate and FLOP savings per variant, one column per workload."""
    variants = sorted(res.variants(results, study), key=lambda v: v["value"])
    keys = [w for w in results["suite"]["variants"]["workloads"]
            if w in res.workloads(results)]
    if not variants or not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(keys), figsize=(max(8.0, 4.6 * len(keys)), 7.4), squeeze=False)
    xs = list(range(len(variants))) if study == LAYER_MIX else [v["value"] for v in variants]
    for col, w in enumerate(keys):
        for row, metric in enumerate(("token_hit_rate", "flop_savings")):
            ax = axes[row][col]
            for p in res.policies(results):
                ys = [100 * res.at_fraction(results, v["model"], w,
                                            _variant_fraction(results), study)[p][metric]
                      for v in variants]
                ax.plot(xs, ys, **_style(p))
            inf = [100 * res.reference(results, v["model"], w, study)["infinite"][metric]
                   for v in variants]
            ax.plot(xs, inf, label="infinite (no capacity limit)", **INFINITE_STYLE)
            if metric == "flop_savings":
                ub = [100 * res.at_fraction(results, v["model"], w, _variant_fraction(results),
                                            study)["bound"]["upper_flop_savings"]
                      for v in variants]
                ax.plot(xs, ub, label="offline upper bound (LP / Lagrangian)", **BOUND_STYLE)
            if study == LAYER_MIX:
                ax.set_xticks(xs)
                ax.set_xticklabels([v["label"] for v in variants])
                ax.set_xlabel("attention : recurrent layers")
            else:
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs)
                ax.set_xticklabels([v["label"] for v in variants])
                ax.set_xlabel("SSM state dimension d_state (log scale)")
            _percent_axis(ax, "token hit rate (%)" if metric == "token_hit_rate"
                          else "prefill FLOP savings (%)", max(inf))
            if row == 0:
                cap = _variant_capacity(results, variants[0]["model"], w, study)
                ax.set_title(f"{res.workload_label(results, w)} @ {cap / GIB:,.1f} GiB",
                             fontsize=11)
    base = results["suite"]["base_model"]
    what = ("layer mix (paper Fig. 12a)" if study == LAYER_MIX
            else "state size (paper Fig. 12b)")
    fig.suptitle(f"{base} variants: {what}\nsame cache capacity for every variant",
                 fontsize=12)
    fig.tight_layout(rect=(0, _legend(fig, axes.flat), 1, 0.95))
    return _save(fig, out / f"{study}.png")


def _variant_fraction(results) -> float:
    return results["suite"]["variants"]["fraction"]


def _variant_capacity(results, model: str, workload: str, study: str) -> int:
    rows = res.at_fraction(results, model, workload, _variant_fraction(results), study)
    return next(iter(rows.values()))["capacity_bytes"]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, pil_kwargs={"optimize": True})
    _pyplot().close(fig)
    return path


def write_all(results, out: Path) -> list[Path]:
    """Every plot of a results document, written into `out`."""
    out = Path(out)
    paths = []
    for model in results["suite"]["models"]:
        paths.append(capacity_figure(results, model, out))
        paths.append(ttft_figure(results, model, out))
    if results["suite"]["variants"] is not None:
        for study in (LAYER_MIX, D_STATE):
            p = variant_figure(results, study, out)
            if p is not None:
                paths.append(p)
    return paths

