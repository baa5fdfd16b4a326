"""TensorRT-LLM 1.2.1's engine model (runtime/engines/trtllm.py): one worked example per
flag, the flags' validation, the replay against a naive list-of-prefixes model on a seeded
trace, the launch text, and (where tensorrt_llm imports) the YAML through its own
``KvCacheConfig``.

Unless a test says otherwise the model is ``causal_toy_cost(kv=100, state=300)``: one
attention layer of 100 B/token and one SSM layer of a 300-byte state, capacity unbounded.
A hit is the deepest snapshot on the matched path at most L_in − 1 tokens deep (the lookup
leaves out the prompt's last token); snapshots are taken only at planned points.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import yaml

from helpers import causal_toy_cost, token_workload
from marconi.errors import UserError
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.engines import engine
from marconi.runtime.engines.trtllm import MODEL, branch_point, planned_points
from marconi.runtime.sim.simulator import replay_policy

TOY = causal_toy_cost(kv=100, state=300)
UNBOUNDED = CacheConfig(capacity=Capacity.unbounded())

REUSE = "enable_block_reuse"
BLOCK = "tokens_per_block"
PERIODIC = "mamba_state_config.periodic_snapshot_interval"
FROM_START = "mamba_state_config.additional_snapshot_offsets_from_start"
FROM_END = "mamba_state_config.additional_snapshot_offsets_from_end"
BRANCH = "mamba_state_config.enable_branch_snapshot"
POLICY = "block_reuse_config.policy"
POOL_RATIO = "pool_ratio"
SSM_DTYPE = "mamba_ssm_cache_dtype"

P40 = list(range(40))
P60 = list(range(60))


def hits(flags, seqs, config=UNBOUNDED, cost=TOY) -> int:
    return replay_policy(MODEL.policy(flags), token_workload(seqs), cost, config).hit_tokens


def test_engine_lookup():
    assert engine("trtllm") is MODEL and MODEL.version == "1.2.1"
    for f in MODEL.flags:
        assert f.default in f.choices and len(f.choices) <= 6 and f.source.startswith(
            "tensorrt_llm/")


# ---------------------------------------------------------------- one example per flag
def test_defaults_take_no_snapshot_so_nothing_hits():
    # No periodic interval, no offsets, no branch snapshot: TensorRT-LLM plans no snapshot
    # point, so an identical resend of a 40-token prompt hits nothing.
    assert hits({}, [P40, P40]) == 0


def test_enable_block_reuse():
    # Interval 16 on a 40-token prompt: states at 16 and 32; the resend looks up 39 tokens
    # and hits 32. With reuse off nothing is looked up.
    assert hits({PERIODIC: 16}, [P40, P40]) == 32
    assert hits({PERIODIC: 16, REUSE: False}, [P40, P40]) == 0


@pytest.mark.parametrize("interval, expected", [
    pytest.param(0, 0, id="off"),
    pytest.param(16, 48, id="16"),    # states 16, 32, 48, (60); deepest ≤ 59: 48
    pytest.param(32, 32, id="32"),    # states 32; deepest ≤ 59: 32
    pytest.param(64, 0, id="64"),     # 64 > 60: no state in the prompt
])
def test_periodic_snapshot_interval(interval, expected):
    assert hits({PERIODIC: interval}, [P60, P60]) == expected


def test_identical_prompt_never_hits_its_own_end():
    # Interval 20 on a 40-token prompt: states at 20 and 40. The resend looks up only 39
    # tokens, so the state at 40 is out of reach: the hit is 20.
    assert hits({PERIODIC: 20}, [P40, P40]) == 20


@pytest.mark.parametrize("offsets, expected", [
    pytest.param((20,), 20, id="20"),
    pytest.param((20, 30), 30, id="20-30"),
    pytest.param((50,), 0, id="beyond-prompt"),   # offsets past the prompt are ignored
])
def test_additional_snapshot_offsets_from_start(offsets, expected):
    assert hits({FROM_START: offsets}, [P40, P40]) == expected


@pytest.mark.parametrize("offsets, second, expected", [
    # 0 = the prompt end (40): out of reach for the same prompt, a hit of 40 for a longer
    # prompt that extends it (a second turn).
    pytest.param((0,), P40, 0, id="0-same"),
    pytest.param((0,), P40 + [900, 901], 40, id="0-extended"),
    pytest.param((1,), P40, 39, id="1"),          # state at 39 = the lookup's end
    pytest.param((45,), P40, 0, id="before-start"),   # 40 − 45 < 0: ignored
])
def test_additional_snapshot_offsets_from_end(offsets, second, expected):
    assert hits({FROM_END: offsets}, [P40, second]) == expected


X = list(range(60))
Y = list(range(50)) + [100 + i for i in range(10)]
Z = list(range(50)) + [200 + i for i in range(10)]


@pytest.mark.parametrize("block, expected", [
    pytest.param(16, 48, id="16"),
    pytest.param(32, 32, id="32"),
    pytest.param(64, 0, id="64"),
])
def test_tokens_per_block_aligns_the_branch_snapshot(block, expected):
    # Branch snapshots on, nothing else planned. X (60 tokens) snapshots its end (the
    # fallback). Y shares 50 tokens with X: its fork at 50 is aligned down to the block
    # (16 → 48, 32 → 32, 64 → 0 = none), and it snapshots its own end too. Z shares the
    # same 50 tokens with Y: it hits Y's branch state (X's and Y's ends are off its path).
    assert hits({BRANCH: True, BLOCK: block}, [X, Y, Z]) == expected


def test_enable_branch_snapshot():
    # Off (nothing else planned): no state anywhere, 0. On: the fallback end state of P40
    # serves a 2-turn extension (40), and with tokens_per_block 16 the X/Y/Z fork gives
    # Z 48 (previous test).
    assert hits({}, [X, Y, Z]) == 0
    assert hits({BRANCH: True}, [P40, P40 + [900, 901]]) == 40
    assert hits({BRANCH: True, BLOCK: 16}, [X, Y, Z]) == 48


def test_branch_snapshot_keeps_a_configured_placement():
    # A placement applies, so the prompt end is not added as a fallback. Interval 20 on
    # X (60 tokens): 20, 40, 60; an extension of X by 2 tokens looks up 61 tokens and hits
    # 60. Interval 25: 25 and 50 only, so the extension hits 50 (no end state).
    ext = X + [900, 901]
    assert hits({BRANCH: True, PERIODIC: 20}, [X, ext]) == 60
    assert hits({BRANCH: True, PERIODIC: 25}, [X, ext]) == 50
    assert hits({BRANCH: True}, [X, ext]) == 60          # no placement: the end fallback


@pytest.mark.parametrize("policy, expected", [
    pytest.param("all_reusable", 32, id="all_reusable"),    # becomes per_request
    pytest.param("per_request", 32, id="per_request"),
    pytest.param("per_conversation", 0, id="per_conversation"),   # interval set to 0
])
def test_block_reuse_policy(policy, expected):
    assert hits({PERIODIC: 16, POLICY: policy}, [P40, P40]) == expected


def test_per_conversation_keeps_the_offsets():
    # Only the periodic snapshots are dropped: an offset from the start still hits.
    assert hits({PERIODIC: 16, FROM_START: (24,), POLICY: "per_conversation"},
                [P40, P40]) == 24


@pytest.mark.parametrize("ratio, expected", [
    # Interval 16 on P40: 40 tokens · 100 B = 4000 B of KV, two 300-B states.
    pytest.param(None, 32, id="one-pool"),            # 10 000 B hold 4600 B
    pytest.param((0.9, 0.1), 32, id="90-10"),         # state pool 1000 B ≥ 600 B
    pytest.param((0.99, 0.01), 0, id="99-1"),         # state pool 100 B < one 300-B state
])
def test_pool_ratio(ratio, expected):
    config = CacheConfig(capacity=Capacity(10_000))
    flags = {PERIODIC: 16, POOL_RATIO: ratio}
    assert hits(flags, [P40, P40], config) == expected
    pol = MODEL.policy(flags)(TOY, config, token_workload([P40]))
    assert pol.capacity() == (Capacity(10_000) if ratio is None
                              else Capacity(10_000, int(10_000 * ratio[1])))


@pytest.mark.parametrize("dtype, state, expected", [
    # One state at 32; a 4500-B total with (0.9, 0.1) gives a 450-B state pool.
    pytest.param("auto", 300, 32, id="auto"),       # fp16 as the model: 300 B fits
    pytest.param("float16", 300, 32, id="fp16"),
    pytest.param("float32", 600, 0, id="fp32"),     # 600 B > 450 B: never kept
])
def test_mamba_ssm_cache_dtype(dtype, state, expected):
    config = CacheConfig(capacity=Capacity(4500))
    flags = {FROM_START: (32,), POOL_RATIO: (0.9, 0.1), SSM_DTYPE: dtype}
    assert hits(flags, [P40, P40], config) == expected
    pol = MODEL.policy(flags)(TOY, config, token_workload([P40]))
    assert pol.describe()["state_bytes"] == state


# ---------------------------------------------------------------- the rules on their own
def test_planned_points():
    v = MODEL.resolve({PERIODIC: 16, FROM_START: [5, 100], FROM_END: [0, 3, 70]})
    assert planned_points(40, v) == {16, 32, 5, 40, 37}


def test_branch_point_rules():
    assert branch_point(50, 0, 60, 16) == 48
    assert branch_point(50, 48, 60, 16) is None     # already reused up to the fork
    assert branch_point(10, 0, 60, 16) is None      # aligned to 0
    assert branch_point(64, 0, 64, 16) is None      # at the prompt end


# ---------------------------------------------------------------- against a naive model
def naive_hits(flags, seqs) -> int:
    """The model's rules on a list of prefixes (capacity unbounded): every cached sequence
    and every snapshot prefix kept as a tuple."""
    v = MODEL.resolve(flags)
    seen: list[tuple] = []
    states: set[tuple] = set()
    total = 0
    for s in seqs:
        s = tuple(s)
        L = len(s)
        lookup = s[:L - 1]
        divergence = max((common(lookup, t) for t in seen), default=0)
        hit = max((d for d in range(1, divergence + 1) if s[:d] in states), default=0)
        total += hit
        if v["enable_block_reuse"]:
            points = planned_points(L, v)
            if v[BRANCH]:
                if not points:
                    points.add(L)
                if divergence < L - 1:
                    p = branch_point(divergence, hit, L, v[BLOCK])
                    if p is not None:
                        points.add(p)
            states.update(s[:t] for t in points if t > hit)
            seen.append(s)
    return total


def common(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def shared_prefix_trace(seed: int, n: int = 200) -> list[list[int]]:
    """`n` prompts: one of 4 system prefixes (32–96 tokens), then one of 6 shared middles
    or none, then a unique tail; some prompts resend or extend an earlier one."""
    rng = random.Random(seed)
    heads = [[1000 * h + i for i in range(rng.randrange(32, 97))] for h in range(4)]
    mids = [[50_000 + 100 * m + i for i in range(rng.randrange(8, 40))] for m in range(6)]
    out: list[list[int]] = []
    fresh = 10**6
    for _ in range(n):
        r = rng.random()
        if out and r < 0.15:
            out.append(list(rng.choice(out)))
            continue
        if out and r < 0.3:
            tail = list(range(fresh, fresh + rng.randrange(1, 20)))
            fresh += 20
            out.append(rng.choice(out) + tail)
            continue
        p = list(rng.choice(heads))
        if rng.random() < 0.7:
            p += rng.choice(mids)
        p += list(range(fresh, fresh + rng.randrange(1, 30)))
        fresh += 30
        out.append(p)
    return out


@pytest.mark.parametrize("flags", [
    pytest.param({PERIODIC: 32}, id="periodic-32"),
    pytest.param({BRANCH: True}, id="branch"),
    pytest.param({BRANCH: True, BLOCK: 16, PERIODIC: 48}, id="branch-16-periodic-48"),
    pytest.param({FROM_START: (40,), FROM_END: (0, 5)}, id="offsets"),
    pytest.param({BRANCH: True, POLICY: "per_conversation", PERIODIC: 16}, id="conversation"),
])
def test_replay_matches_the_naive_model(flags):
    seqs = shared_prefix_trace(seed=7)
    got = hits(flags, seqs)
    assert got == naive_hits(flags, seqs)
    if flags.get(PERIODIC) and flags.get(POLICY) != "per_conversation" or flags.get(BRANCH):
        assert got > 0


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("flags, where", [
    pytest.param({"tokens_per_blok": 32}, "trtllm flags", id="unknown"),
    pytest.param({BLOCK: 0}, BLOCK, id="block-0"),
    pytest.param({PERIODIC: -1}, PERIODIC, id="periodic-negative"),
    pytest.param({FROM_START: [0]}, FROM_START, id="from-start-0"),
    pytest.param({FROM_END: [-1]}, FROM_END, id="from-end-negative"),
    pytest.param({FROM_END: 3}, FROM_END, id="from-end-not-list"),
    pytest.param({BRANCH: "yes"}, BRANCH, id="branch-str"),
    pytest.param({POLICY: "lru"}, POLICY, id="policy"),
    pytest.param({POOL_RATIO: [0.5, 0.4]}, POOL_RATIO, id="ratio-sum"),
    pytest.param({POOL_RATIO: [1.0]}, POOL_RATIO, id="ratio-one-group"),
    pytest.param({POOL_RATIO: [1.2, -0.2]}, POOL_RATIO, id="ratio-negative"),
    pytest.param({SSM_DTYPE: "fp8"}, SSM_DTYPE, id="dtype"),
])
def test_validation_names_the_flag(flags, where):
    with pytest.raises(UserError) as e:
        MODEL.resolve(flags)
    assert e.value.where == where


def test_a_block_trace_replays_on_the_id_grid_at_or_above_the_block():
    from helpers import block_workload
    wl = block_workload([(40, 0, (1, 2, 3, 4, 5))], block=8)
    assert MODEL.policy({BLOCK: 36})(TOY, UNBOUNDED, wl).block == 40
    assert MODEL.policy({BLOCK: 32})(TOY, UNBOUNDED, wl).block == 32


# ---------------------------------------------------------------- launch
def test_launch_defaults():
    assert MODEL.launch("nvidia/Nemotron-H-8B-Base-8K", {}, None) == (
        "trtllm-serve nvidia/Nemotron-H-8B-Base-8K "
        "--extra_llm_api_options extra_llm_api_options.yaml\n\n"
        "# extra_llm_api_options.yaml\n")


def test_launch_text():
    text = MODEL.launch("nvidia/Nemotron-H-8B-Base-8K", {
        BLOCK: 64, PERIODIC: 256, BRANCH: True, FROM_END: [0], POLICY: "per_request",
        POOL_RATIO: [0.9, 0.1], SSM_DTYPE: "float32", REUSE: True}, 8 * 2**30)
    assert text == (
        "trtllm-serve nvidia/Nemotron-H-8B-Base-8K "
        "--extra_llm_api_options extra_llm_api_options.yaml\n\n"
        "# extra_llm_api_options.yaml\n"
        "kv_cache_config:\n"
        "  max_gpu_total_bytes: 8589934592\n"
        "  tokens_per_block: 64\n"
        "  pool_ratio: [0.9, 0.1]\n"
        "  mamba_ssm_cache_dtype: float32\n"
        "  mamba_state_config:\n"
        "    periodic_snapshot_interval: 256\n"
        "    additional_snapshot_offsets_from_end: [0]\n"
        "    enable_branch_snapshot: true\n"
        "  block_reuse_config:\n"
        "    policy: per_request\n")
    doc = yaml.safe_load(text.split("# extra_llm_api_options.yaml\n", 1)[1])
    assert doc == {"kv_cache_config": {
        "max_gpu_total_bytes": 8589934592, "tokens_per_block": 64, "pool_ratio": [0.9, 0.1],
        "mamba_ssm_cache_dtype": "float32",
        "mamba_state_config": {"periodic_snapshot_interval": 256,
                               "additional_snapshot_offsets_from_end": [0],
                               "enable_branch_snapshot": True},
        "block_reuse_config": {"policy": "per_request"}}}


def test_failure_modes():
    wl = token_workload([P40, P40, list(range(10))])
    assert MODEL.failure_modes({}, wl, TOY) == [
        "100 % of prompts (3 of 3) get no snapshot below their last token from the "
        "periodic interval and offsets, so no later identical prompt can hit them (no "
        "snapshot point is configured at all: TensorRT-LLM takes none)"]
    # interval 16: the 10-token prompt gets none (1 of 3 = 33 %)
    assert MODEL.failure_modes({PERIODIC: 16}, wl, TOY) == [
        "33 % of prompts (1 of 3) get no snapshot below their last token from the periodic "
        "interval and offsets, so no later identical prompt can hit them"]
    assert MODEL.failure_modes({PERIODIC: 16, BRANCH: True}, wl, TOY) == []
    assert MODEL.failure_modes({REUSE: False}, wl, TOY)[0].startswith(
        "block reuse is off (enable_block_reuse: false): 100 % of the 3 prompts")


# ---------------------------------------------------------------- the engine itself
TRTLLM = importlib.util.find_spec("tensorrt_llm") is not None
NO_ENGINE = ("tensorrt_llm is not installed: its llm_args imports the compiled "
             "tensorrt_llm.bindings and its Mamba cache manager allocates CUDA tensors "
             "(docs/engines/trtllm.md)")


@pytest.mark.skipif(not TRTLLM, reason=NO_ENGINE)
def test_launch_yaml_accepted_by_kv_cache_config():   # pragma: no cover - needs the engine
    from tensorrt_llm.llmapi.llm_args import KvCacheConfig
    text = MODEL.launch("m", {BLOCK: 64, PERIODIC: 256, BRANCH: True, FROM_END: [0],
                              POLICY: "per_request", POOL_RATIO: [0.9, 0.1]}, 2**30)
    doc = yaml.safe_load(text.split("# extra_llm_api_options.yaml\n", 1)[1])
    cfg = KvCacheConfig(**doc["kv_cache_config"])
    assert cfg.tokens_per_block == 64
    assert cfg.mamba_state_config.periodic_snapshot_interval == 256
    assert cfg.block_reuse_config.policy == "per_request"


def test_block_trace_snapshots_land_on_its_ids():
    from helpers import block_workload
    # 8-token ids, a 40-token prompt = 5 ids sent twice. Interval 16: states at 16 and 32
    # tokens = ids 2 and 4; the resend looks up 4 ids (32 tokens) and hits 32 tokens.
    wl = block_workload([(40, 0, (1, 2, 3, 4, 5)), (40, 0, (1, 2, 3, 4, 5))], block=8)
    got = replay_policy(MODEL.policy({PERIODIC: 16}), wl, TOY, UNBOUNDED).hit_tokens
    assert got == 32
    # Interval 20 (20, 40 tokens): 20 floors to id 2 (16 tokens), 40 is the prompt end
    # (id 5, out of the 4-id lookup): the resend hits 16.
    got = replay_policy(MODEL.policy({PERIODIC: 20}), wl, TOY, UNBOUNDED).hit_tokens
    assert got == 16
