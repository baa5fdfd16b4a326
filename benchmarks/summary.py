"""Numbers and Markdown tables of a results document: the generated part of the results page.

Headline comparisons follow the paper's definitions (background/marconi.md §6.3), over the
capacities of a sweep instead of the paper's (capacity × arrival-rate) configs:

- Fig. 7: Marconi / vLLM+ token hit rate, **mean over configs** of the ratio;
- Fig. 8: (Marconi − SGLang+) / SGLang+ token hit rate, **P95 over configs**.

A config where the denominator's hit rate is 0 has no ratio; it is left out and the
number of configs used is shown.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks import results as res

GIB = float(1 << 30)
# the paper's numbers for its three traces (Fig. 7 and Fig. 8)
PAPER = {"lmsys-like": (4.5, 0.456), "sharegpt-like": (7.3, 0.190),
         "swebench-like": (34.4, 2.197)}
BASELINES = ("vllm-all", "vllm-align", "sglang", "marconi", "marconi-static")


def _ratios(results, model, workload, a, b, metric="token_hit_rate"):
    """a/b per capacity where b > 0, and how many capacities there were."""
    ca, cb = res.curve(results, model, workload, a), res.curve(results, model, workload, b)
    if not ca or not cb:
        return [], 0
    vals = [x[metric] / y[metric] for x, y in zip(ca, cb) if y[metric] > 0]
    return vals, len(ca)


def headline(results, model: str, workload: str) -> dict[str, Any]:
    """The paper's comparisons and the bound shares for one (model, workload)."""
    out: dict[str, Any] = {"model": model, "workload": workload}
    names = res.policies(results)
    if {"marconi", "vllm-all"} <= set(names):
        r, n = _ratios(results, model, workload, "marconi", "vllm-all")
        out["marconi_over_vllm_all_mean"] = (float(np.mean(r)) if r else math.nan, len(r), n)
    if {"marconi", "vllm-align"} <= set(names):
        r, n = _ratios(results, model, workload, "marconi", "vllm-align")
        out["marconi_over_vllm_align_mean"] = (float(np.mean(r)) if r else math.nan, len(r), n)
    if {"marconi", "sglang"} <= set(names):
        r, n = _ratios(results, model, workload, "marconi", "sglang")
        gains = [x - 1 for x in r]
        out["marconi_vs_sglang_p95"] = (float(np.percentile(gains, 95)) if gains else math.nan,
                                        len(gains), n)
        out["marconi_vs_sglang_median"] = (float(np.median(gains)) if gains else math.nan,
                                           len(gains), n)
    bound = res.curve(results, model, workload, "bound")
    shares = {}
    for p in names:
        pts = res.curve(results, model, workload, p)
        s = [x["flop_savings"] / b["upper_flop_savings"] for x, b in zip(pts, bound)
             if b["upper_flop_savings"] > 0]
        shares[p] = (float(np.mean(s)) if s else math.nan, float(min(s)) if s else math.nan)
    out["share_of_bound"] = shares
    base = [p for p in BASELINES if p in names]
    if "planned" in names and base:
        gains = []
        for i, pl in enumerate(res.curve(results, model, workload, "planned")):
            best = max(res.curve(results, model, workload, p)[i]["flop_savings"] for p in base)
            if best > 0:
                gains.append(pl["flop_savings"] / best - 1)
        out["planned_vs_best_baseline_mean"] = (float(np.mean(gains)) if gains else math.nan,
                                                len(gains), len(bound))
    return out


# ---------------------------------------------------------------- Markdown

def _pct(x: float, digits: int = 1) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}%"


def _times(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f}×"


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.1f}%"


def _fraction(f: float) -> str:
    """1/128 rather than 0.0078125 (capacities are powers of two of the footprint)."""
    if f >= 1 or abs(1 / f - round(1 / f)) > 1e-9:
        return f"{f:g}"
    return f"1/{round(1 / f)}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(headers, rows, align=None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(headers) - 1)
    return [_row(headers), _row(align)] + [_row(r) for r in rows]


def _dirty_note(dirty) -> str:
    if not dirty:
        return ""
    if isinstance(dirty, list):
        return f" plus uncommitted changes to {', '.join(f'`{f}`' for f in dirty)}"
    return " plus uncommitted changes"


def meta_block(results) -> list[str]:
    m = results["meta"]
    s = results["suite"]
    lines = [f"- command: `{m['command']}`",
             f"- commit: `{m['commit']}`" + _dirty_note(m.get("dirty")),
             f"- machine: `{m['uname']}`; {m['cpus']} CPU cores; Python {m['python']}, "
             f"torch {m['torch']}, numpy {m['numpy']}, matplotlib {m['matplotlib']}",
             f"- seeds: generator seed {s['seed']} (traces have none; every policy and "
             "bound is deterministic)",
             f"- run: {m['jobs']} worker processes, {m['seconds']:.0f} s wall, "
             f"{m['date']}",
             f"- policies: {', '.join(res.policies(results))}; the offline bound: "
             f"`offline_bound(method={s['bound_method']!r})`"]
    for r in m.get("reruns", []):           # `benchmarks.rerun`: one variant measured again
        lines.append(f"- re-measured since: {r['what']} ({r['records']} records, "
                     f"{r['seconds']:.0f} s wall, {r['date']}) at commit `{r['commit']}`"
                     + _dirty_note(r.get("dirty")) + f": `{r['command']}`")
    if results["skipped_workloads"]:
        lines.append(f"- left out (trace not found): {', '.join(results['skipped_workloads'])}")
    return lines


def workload_table(results) -> list[str]:
    rows = []
    for w in res.workloads(results):
        ref0 = res.reference(results, results["suite"]["models"][0], w)
        feet = ", ".join(f"{res.reference(results, m, w)['footprint_bytes'] / GIB:,.0f}"
                         for m in results["suite"]["models"])
        rows.append([res.workload_label(results, w), f"{ref0['requests']:,}",
                     f"{ref0['input_tokens'] / max(1, ref0['requests']):,.0f}",
                     ref0["block_size"], _pct(ref0["infinite"]["token_hit_rate"]), feet])
    models = " / ".join(results["suite"]["models"])
    return _table(["workload", "requests", "mean input tokens", "tokens per id",
                   "infinite token hit", f"reference footprint GiB ({models})"], rows)


def policy_table(results, model: str) -> list[str]:
    """Token hit / FLOP savings / share of bound per policy and workload at the TTFT capacity."""
    fraction = results["suite"]["ttft_fraction"]
    keys = res.workloads(results)
    headers = ["policy"] + [res.workload_label(results, w) for w in keys]
    rows = []
    cap_row = ["capacity"]
    for w in keys:
        any_row = next(iter(res.at_fraction(results, model, w, fraction).values()))
        cap_row.append(f"{any_row['capacity_bytes'] / GIB:,.1f} GiB")
    rows.append(cap_row)
    for p in res.policies(results):
        cells = [p]
        for w in keys:
            at = res.at_fraction(results, model, w, fraction)
            r, b = at[p], at["bound"]
            share = r["flop_savings"] / b["upper_flop_savings"] if \
                b["upper_flop_savings"] > 0 else math.nan
            cells.append(f"{_pct(r['token_hit_rate'])} / {_pct(r['flop_savings'])} / "
                         f"{_pct(share, 0)}")
        rows.append(cells)
    rows.append(["upper bound (FLOP)"] + [
        _pct(res.at_fraction(results, model, w, fraction)["bound"]["upper_flop_savings"])
        for w in keys])
    rows.append(["infinite"] + [
        f"{_pct(res.reference(results, model, w)['infinite']['token_hit_rate'])} / "
        f"{_pct(res.reference(results, model, w)['infinite']['flop_savings'])}"
        for w in keys])
    return _table(headers, rows)


def headline_table(results, model: str) -> list[str]:
    rows = []
    for w in res.workloads(results):
        h = headline(results, model, w)
        paper = PAPER.get(w)
        va = h.get("marconi_over_vllm_all_mean", (math.nan, 0, 0))
        vg = h.get("marconi_over_vllm_align_mean", (math.nan, 0, 0))
        sg = h.get("marconi_vs_sglang_p95", (math.nan, 0, 0))
        sm = h.get("marconi_vs_sglang_median", (math.nan, 0, 0))
        pl = h.get("planned_vs_best_baseline_mean", (math.nan, 0, 0))
        rows.append([res.workload_label(results, w),
                     f"{_times(va[0])} ({va[1]}/{va[2]})",
                     f"{paper[0]}×" if paper else "–",
                     f"{_times(vg[0])} ({vg[1]}/{vg[2]})",
                     f"{_signed(sg[0])} ({sg[1]}/{sg[2]})",
                     _signed(sm[0]),
                     f"{paper[1] * 100:+.1f}%" if paper else "–",
                     _signed(pl[0])])
    return _table(["workload", "marconi / vllm-all, mean", "paper (vLLM+)",
                   "marconi / vllm-align, mean", "marconi vs sglang, P95", "… median",
                   "paper (SGLang+, P95)", "planned vs best baseline (FLOP), mean"], rows)


def bound_table(results, model: str) -> list[str]:
    names = res.policies(results)
    rows = []
    for w in res.workloads(results):
        shares = headline(results, model, w)["share_of_bound"]
        rows.append([res.workload_label(results, w)] +
                    [f"{_pct(shares[p][0], 0)} ({_pct(shares[p][1], 0)})" for p in names])
    return _table(["workload"] + names, rows)


def ttft_table(results, model: str) -> list[str]:
    fraction = results["suite"]["ttft_fraction"]
    names = res.policies(results)
    rows = []
    for w in res.workloads(results):
        ref = res.reference(results, model, w)
        at = res.at_fraction(results, model, w, fraction)
        rows.append([res.workload_label(results, w),
                     f"{ref['no_cache_ttft_p50_ms']:,.0f} / {ref['no_cache_ttft_p95_ms']:,.0f}"]
                    + [f"{at[p]['ttft_p50_ms']:,.0f} / {at[p]['ttft_p95_ms']:,.0f}"
                       for p in names])
    return _table(["workload", "no cache"] + names, rows)


def variant_table(results, study: str) -> list[str]:
    variants = sorted(res.variants(results, study), key=lambda v: v["value"])
    if not variants:
        return []
    names = res.policies(results)
    fraction = results["suite"]["variants"]["fraction"]
    rows = []
    for w in results["suite"]["variants"]["workloads"]:
        if w not in res.workloads(results):
            continue
        for v in variants:
            at = res.at_fraction(results, v["model"], w, fraction, study)
            ref = res.reference(results, v["model"], w, study)
            rows.append([res.workload_label(results, w), v["label"]] +
                        [_pct(at[p]["token_hit_rate"]) for p in names] +
                        [_pct(ref["infinite"]["token_hit_rate"]),
                         _pct(at["bound"]["upper_flop_savings"])])
    return _table(["workload", "variant"] + names + ["infinite", "bound (FLOP)"], rows)


def markdown(results, image_prefix: str) -> str:
    """The generated section of the results page (plots referenced under `image_prefix`)."""
    fraction = results["suite"]["ttft_fraction"]
    out = ["### Run", ""] + meta_block(results) + ["", "### Workloads", ""]
    out += workload_table(results)
    fractions = ", ".join(_fraction(f) for f in results["suite"]["capacity_fractions"])
    out += ["", "Reference footprint: peak bytes of `sglang` with no capacity limit; the "
            f"sweep's capacities are {fractions} × that footprint.", ""]
    for model in results["suite"]["models"]:
        out += [f"### {model}", "",
                f"![capacity sweep, {model}]({image_prefix}capacity-{model}.png)", "",
                f"Token hit / FLOP savings / share of the FLOP upper bound at "
                f"{_fraction(fraction)} × footprint:", ""]
        out += policy_table(results, model)
        out += ["", "Headline comparisons over the capacity sweep (configs used / configs):",
                ""]
        out += headline_table(results, model)
        out += ["", "Share of the offline upper bound on FLOP savings, mean (worst) over "
                "the capacity sweep:", ""]
        out += bound_table(results, model)
        out += ["", f"![TTFT, {model}]({image_prefix}ttft-{model}.png)", "",
                f"TTFT P50 / P95 in ms at {_fraction(fraction)} × footprint:", ""]
        out += ttft_table(results, model)
        out.append("")
    if results["suite"]["variants"] is not None:
        for study, title, fig in (("layer-mix", "Layer mix (paper Fig. 12a)", "layer-mix"),
                                  ("d-state", "State size (paper Fig. 12b)", "d-state")):
            table = variant_table(results, study)
            if table:
                out += [f"### {title}", "", f"![{title}]({image_prefix}{fig}.png)", "",
                        "Token hit rate per policy:", ""] + table + [""]
    return "\n".join(out)
