"""The benchmark suite (benchmarks/): a quick run end to end, checked for result sanity.

The quick paper suite runs once (module fixture, `python -m benchmarks.run` in a
subprocess, as CI would) and every test reads its results.json: the checks are the
relations that must hold between policies, the unbounded cache and the offline bound,
never timings. Mooncake traces are used when ../shared/traces exists and left out
otherwise. Smaller unit tests check the variant specs against closed forms, the headline
statistics against hand-computed values, the page splice, and that results do not depend
on the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from benchmarks import results as res
from benchmarks import summary
from benchmarks.run import BEGIN, END, splice
from benchmarks.variants import d_state_variant, layer_mix_variant, mix_label
from marconi.errors import TraceError, UserError
from marconi.layers import LayerKind
from marconi.passes import build_cost_model
from marconi.spec import load_model

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "examples" / "models" / "marconi-7b-hybrid.yaml"
EPS = 1e-9


def _run(*args: str, out: Path, timeout: int = 600) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", *args, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return res.load(out)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("quick")
    return _run("--suite", "paper", "--quick", "--jobs", "2", out=out), out


def _policy_records(results):
    return [r for r in results["records"] if r["kind"] == "policy"]


def _groups(results):
    """(study, model, workload, fraction) → {policy or "bound": record}."""
    out = defaultdict(dict)
    for r in results["records"]:
        out[(r["study"], r["model"], r["workload"], r["fraction"])][r["policy"]] = r
    return out


# ---------------------------------------------------------------- the quick suite

@pytest.mark.slow
def test_quick_covers_the_suite(quick):
    results, _ = quick
    suite = results["suite"]
    names = res.policies(results)
    assert {"vllm-all", "vllm-align", "sglang", "marconi"} <= set(names)
    assert "infinite" not in names                     # a reference, run once
    keys = res.workloads(results)
    assert {"lmsys-like", "sharegpt-like", "swebench-like"} <= set(keys)
    if (REPO.parent / "shared" / "traces").exists():
        assert {"mooncake-conversation", "mooncake-synthetic"} <= set(keys)
    groups = _groups(results)
    for model in suite["models"]:
        for w in keys:
            for f in suite["capacity_fractions"]:
                assert set(groups[("capacity", model, w, f)]) == set(names) | {"bound"}
    n_variants = len(suite["variants"]["layer_mixes"]) + len(suite["variants"]["d_states"])
    assert len(results["variants"]) == n_variants
    for v in results["variants"]:
        for w in suite["variants"]["workloads"]:
            at = groups[(v["study"], v["model"], w, suite["variants"]["fraction"])]
            assert set(at) == set(names) | {"bound"}


@pytest.mark.slow
def test_infinite_hits_at_least_every_policy(quick):
    results, _ = quick
    for r in _policy_records(results):
        ref = res.reference(results, r["model"], r["workload"], r["study"])
        assert r["token_hit_rate"] <= ref["infinite"]["token_hit_rate"] + EPS, r


@pytest.mark.slow
def test_bound_above_every_policy_flop_savings(quick):
    results, _ = quick
    for key, group in _groups(results).items():
        bound = group["bound"]
        assert bound["rounded_flop_savings"] <= bound["upper_flop_savings"] + EPS, key
        for p, r in group.items():
            if p != "bound":
                assert r["flop_savings"] <= bound["upper_flop_savings"] + EPS, (key, p)


@pytest.mark.slow
def test_peak_occupancy_within_capacity(quick):
    results, _ = quick
    for r in _policy_records(results):
        assert 0.0 <= r["peak_occupancy"] <= 1.0 + EPS, r
        assert r["peak_bytes"] <= r["capacity_bytes"], r


@pytest.mark.slow
def test_metrics_are_fractions_and_consistent(quick):
    results, _ = quick
    for r in _policy_records(results):
        for field in ("token_hit_rate", "request_hit_rate", "flop_savings"):
            assert 0.0 <= r[field] <= 1.0, (field, r)
        assert r["ttft_p50_ms"] <= r["ttft_p95_ms"]
        ref = res.reference(results, r["model"], r["workload"], r["study"])
        assert r["ttft_p95_ms"] <= ref["no_cache_ttft_p95_ms"] + EPS   # a hit never costs
        assert r["hit_tokens"] == round(r["token_hit_rate"] * r["input_tokens"])


@pytest.mark.slow
def test_monotone_in_capacity(quick):
    """The bound grows with capacity; every policy does better at 64× the bytes."""
    results, _ = quick
    for model in results["suite"]["models"]:
        for w in res.workloads(results):
            bound = [b["upper_flop_savings"] for b in res.curve(results, model, w, "bound")]
            assert all(b2 >= b1 - 1e-6 for b1, b2 in zip(bound, bound[1:])), (w, bound)
            for p in res.policies(results):
                c = res.curve(results, model, w, p)
                assert c[-1]["flop_savings"] >= c[0]["flop_savings"] - EPS, (w, p)
                assert c[-1]["token_hit_rate"] >= c[0]["token_hit_rate"] - EPS, (w, p)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_plots_and_page_written(quick):
    results, out = quick
    expected = [f"capacity-{m}.png" for m in results["suite"]["models"]] + \
        [f"ttft-{m}.png" for m in results["suite"]["models"]] + ["layer-mix.png", "d-state.png"]
    for name in expected:
        w, h = _png_size(out / name)
        assert w >= 600 and h >= 400, name
    text = (out / "summary.md").read_text()
    for name in expected:
        assert f"({name})" in text
    assert results["meta"]["commit"] and results["meta"]["uname"]


# ---------------------------------------------------------------- determinism

def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not k.endswith("seconds")}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


@pytest.mark.slow
def test_results_independent_of_process_count(smoke_run, tmp_path):
    one = res.load(smoke_run)                          # --suite smoke --jobs 1 --no-plots
    two = _run("--suite", "smoke", "--jobs", "2", "--no-plots", out=tmp_path / "two")
    for key in ("references", "records", "variants"):
        assert _strip_timing(one[key]) == _strip_timing(two[key]), key


# ---------------------------------------------------------------- variants

@pytest.fixture(scope="module")
def base():
    return load_model(BASE)


@pytest.mark.slow
@pytest.mark.parametrize("n_rec,n_att", [pytest.param(32, 4, id="1:8"),
                                         pytest.param(24, 12, id="1:2"),
                                         pytest.param(0, 36, id="transformer")])
def test_layer_mix_variant_sizes(base, n_rec, n_att):
    """KV bytes per token scale with attention layers, state bytes with recurrent ones."""
    v = layer_mix_variant(base, n_rec, n_att)
    assert v.count(LayerKind.MAMBA2) == n_rec and v.count(LayerKind.ATTENTION) == n_att
    assert v.count(LayerKind.MLP) == n_rec + n_att
    assert [ls.index for ls in v.layers] == list(range(len(v.layers)))
    assert v.name != base.name and v.fingerprint() != base.fingerprint()
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.name = "x"
    cb, cv = build_cost_model(base), build_cost_model(v)
    per_attention = cb.kv_bytes_per_token / base.count(LayerKind.ATTENTION)
    per_recurrent = cb.state_bytes() / base.count(LayerKind.MAMBA2)
    assert cv.kv_bytes_per_token == per_attention * n_att
    assert cv.state_bytes() == per_recurrent * n_rec
    assert mix_label(n_rec, n_att) == ("Transformer" if n_rec == 0 else f"1:{n_rec // n_att}")


@pytest.mark.slow
def test_d_state_variant_state_is_linear_in_d_state(base):
    """Mamba2 state = SSM (heads·head_dim·N) + conv ((d_inner + 2·groups·N)·width): linear
    in N, so the sizes at N = 16, 32, 64 and the base's 128 lie on one line."""
    sizes = {d: build_cost_model(d_state_variant(base, d)).state_bytes()
             for d in (16, 32, 64, 128)}
    assert sizes[128] == build_cost_model(base).state_bytes()
    slope = (sizes[128] - sizes[64]) / 64
    for d in (16, 32):
        assert sizes[d] == sizes[64] - slope * (64 - d)
    kv = {build_cost_model(d_state_variant(base, d)).kv_bytes_per_token for d in (16, 128)}
    assert len(kv) == 1                                # attention untouched
    assert all(ls.params.d_state == 16 for ls in d_state_variant(base, 16).layers
               if ls.kind is LayerKind.MAMBA2)


# ---------------------------------------------------------------- summary statistics

def _fake_results(hits: dict[str, list[float]], upper: list[float]) -> dict:
    caps = [1 << (30 + i) for i in range(len(upper))]
    records = []
    for p, hs in hits.items():
        for cap, h in zip(caps, hs):
            records.append({"study": "capacity", "model": "m", "workload": "w",
                            "kind": "policy", "policy": p, "fraction": cap / caps[-1],
                            "capacity_bytes": cap, "token_hit_rate": h, "flop_savings": h})
    for cap, u in zip(caps, upper):
        records.append({"study": "capacity", "model": "m", "workload": "w", "kind": "bound",
                        "policy": "bound", "fraction": cap / caps[-1], "capacity_bytes": cap,
                        "upper_flop_savings": u})
    return {"records": records, "variants": [], "references": [], "skipped_workloads": [],
            "suite": {"workloads": [{"key": "w", "label": "W"}]}}


def test_headline_statistics_by_hand():
    results = _fake_results({"vllm-all": [0.0, 0.1, 0.2, 0.4],
                             "vllm-align": [0.1, 0.2, 0.2, 0.4],
                             "sglang": [0.1, 0.2, 0.4, 0.5],
                             "marconi": [0.1, 0.3, 0.5, 0.5],
                             "planned": [0.2, 0.3, 0.6, 0.5]},
                            upper=[0.4, 0.6, 0.8, 1.0])
    h = summary.headline(results, "m", "w")
    # vllm-all has no hits at the first capacity: 3 of 4 ratios, 3, 2.5, 1.25
    assert h["marconi_over_vllm_all_mean"] == pytest.approx(((3 + 2.5 + 1.25) / 3, 3, 4))
    assert h["marconi_over_vllm_align_mean"][0] == pytest.approx((1 + 1.5 + 2.5 + 1.25) / 4)
    gains = [0.0, 0.5, 0.25, 0.0]                      # (marconi - sglang) / sglang
    p95 = sorted(gains)[2] + 0.85 * (sorted(gains)[3] - sorted(gains)[2])   # linear, numpy's
    assert h["marconi_vs_sglang_p95"] == pytest.approx((p95, 4, 4))
    assert h["marconi_vs_sglang_median"][0] == pytest.approx(0.125)
    assert h["share_of_bound"]["marconi"] == pytest.approx(
        ((0.1 / 0.4 + 0.3 / 0.6 + 0.5 / 0.8 + 0.5) / 4, 0.25))
    best = [0.1, 0.3, 0.5, 0.5]                        # max over the baselines
    planned = [0.2, 0.3, 0.6, 0.5]
    assert h["planned_vs_best_baseline_mean"][0] == pytest.approx(
        sum(p / b - 1 for p, b in zip(planned, best)) / 4)


def test_headline_undefined_when_every_denominator_is_zero():
    results = _fake_results({"vllm-all": [0.0, 0.0], "marconi": [0.1, 0.2]}, [0.5, 0.5])
    value, used, total = summary.headline(results, "m", "w")["marconi_over_vllm_all_mean"]
    assert math.isnan(value) and (used, total) == (0, 2)


# ---------------------------------------------------------------- page and inputs

def test_splice_replaces_only_the_generated_section(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(f"# Title\nkept above\n{BEGIN}\nold numbers\n{END}\nkept below\n")
    splice(page, "new numbers")
    text = page.read_text()
    assert "old numbers" not in text and "new numbers" in text
    assert text.startswith("# Title\nkept above\n") and text.endswith("kept below\n")
    page.write_text("no markers\n")
    with pytest.raises(UserError):
        splice(page, "x")


def test_missing_trace_left_out_only_when_allowed(tmp_path):
    from benchmarks import workloads as wl
    from benchmarks.suites import Suite
    from benchmarks.sweep import build_inputs
    suite = Suite(name="t", quick=True, models=("marconi-7b-hybrid",),
                  workloads=(wl.mooncake("conversation"), wl.sharegpt(sessions=2)),
                  fractions=(1.0,), ttft_fraction=1.0, variants=None)
    inputs = build_inputs(suite, tmp_path, allow_missing=True)
    assert inputs.skipped == ("mooncake-conversation",)
    assert set(inputs.workloads) == {"sharegpt-like"}
    with pytest.raises(TraceError, match="mooncake_conversation.jsonl"):
        build_inputs(suite, tmp_path, allow_missing=False)


@pytest.mark.slow
def test_results_json_round_trips(quick):
    results, out = quick
    assert json.loads((out / "results.json").read_text()) == results
