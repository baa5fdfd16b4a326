"""vLLM 0.33.0's engine model (runtime/engines/vllm.py): one worked example per flag, the
flags' validation, the page alignment against a slow search, the launch line, and (where
vLLM imports) the launch line through vLLM's own argument parser.

Unless a test says otherwise the model is ``causal_toy_cost(kv=100, state=300)``: one
attention layer of 100 B/token and one SSM layer of a 300-byte state. Page alignment keeps
the 16-token block (16·100 = 1600 B ≥ 300 B), and the state page is padded to 1600 B.
A hit is the deepest cached state at a block boundary at most L_in − 1 tokens deep.
"""

from __future__ import annotations

import importlib.util
import shlex

import pytest

from helpers import block_workload, causal_toy_cost, token_workload
from marconi.errors import UserError
from marconi.passes.cost_model import CostModel, LayerCost, LayerKind
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.engines import engine
from marconi.runtime.engines.vllm import MODEL, aligned_block, aligned_block_ref, layout
from marconi.runtime.sim.simulator import replay_policy

TOY = causal_toy_cost(kv=100, state=300)
BIG_STATE = causal_toy_cost(kv=100, state=2000)   # fp16 state: 2000 B > one 1600-B page
UNBOUNDED = CacheConfig(capacity=Capacity.unbounded())

P40 = list(range(40))
P60 = list(range(60))


def hits(flags, seqs, cost=TOY, config=UNBOUNDED) -> int:
    return replay_policy(MODEL.policy(flags), token_workload(seqs), cost, config).hit_tokens


def mamba_only(state: int = 300) -> CostModel:
    return CostModel("toy-mamba", "float16", "float16",
                     (LayerCost(0, LayerKind.MAMBA2, "ssm", recurrent_state_bytes=state),))


def test_engine_lookup():
    assert engine("vllm") is MODEL and MODEL.version == "0.33.0"
    for f in MODEL.flags:
        assert f.default in f.choices and len(f.choices) <= 6 and f.source.startswith("vllm/")


# ---------------------------------------------------------------- one example per flag
def test_enable_prefix_caching():
    # Two identical 40-token prompts. On: the first caches KV of floor(40/16) = 2 blocks and
    # a state at the replay boundary floor(39/16)·16 = 32; the second (capped at 39 tokens)
    # hits 32. Off: nothing is looked up or cached.
    assert hits({}, [P40, P40]) == 32
    assert hits({"--enable-prefix-caching": False}, [P40, P40]) == 0


def test_identical_block_aligned_prompt_hits_one_block_lower():
    # A 48-token prompt sent twice: the hit is capped at 47 tokens, so the state is kept at
    # floor(47/16)·16 = 32 (not 48) and the resend hits 32.
    p48 = list(range(48))
    assert hits({}, [p48, p48]) == 32


@pytest.mark.parametrize("block, expected", [
    pytest.param(16, 48, id="16"),   # state at floor(59/16)·16 = 48
    pytest.param(32, 32, id="32"),   # floor(59/32)·32 = 32
    pytest.param(64, 0, id="64"),    # floor(59/64)·64 = 0: never hits
])
def test_block_size(block, expected):
    assert hits({"--block-size": block}, [P60, P60]) == expected


def test_page_alignment_raises_the_block():
    # The 2000-byte state needs 2000/100 = 20 tokens of one attention layer's KV; the
    # least multiple of 16 is 32, so the block is 32 and 60-token prompts hit
    # floor(59/32)·32 = 32, not the 48 a 16-token block would give.
    assert layout(BIG_STATE, MODEL.resolve({})).block_tokens == 32
    assert hits({}, [P60, P60], BIG_STATE) == 32
    assert hits({}, [P60, P60]) == 48


def test_mamba_ssm_cache_dtype():
    # float32 doubles the fp16 SSM state to 4000 B: 40 tokens of KV, so the block becomes
    # 48 and the hit floor(59/48)·48 = 48. bfloat16 is the model's own 2 bytes: as auto.
    lay32 = layout(BIG_STATE, MODEL.resolve({"--mamba-ssm-cache-dtype": "float32"}))
    assert (lay32.block_tokens, lay32.mamba_page_bytes) == (48, 4000)
    assert hits({"--mamba-ssm-cache-dtype": "float32"}, [P60, P60], BIG_STATE) == 48
    assert hits({"--mamba-ssm-cache-dtype": "bfloat16"}, [P60, P60], BIG_STATE) == 32


def test_mamba_ssm_cache_dtype_changes_capacity_use():
    # In a 6400-byte pool: auto (block 32) caches 32 tokens of KV (3200 B) + one padded
    # 3200-byte state page = 6400 B, and the resend hits 32. float32 (block 48) needs
    # 4800 + 4800 = 9600 B: the entry does not fit, nothing is cached, no hit.
    pool = CacheConfig(capacity=Capacity.shared(6400))
    assert hits({}, [P60, P60], BIG_STATE, pool) == 32
    assert hits({"--mamba-ssm-cache-dtype": "float32"}, [P60, P60], BIG_STATE, pool) == 0


def test_prefix_cache_retention_interval():
    # R1 = 0..63; R2, R3 share its first 32 tokens, then differ (64 tokens each).
    # Interval 0: R1 keeps a state at 48 only; R2 misses (KV matches 32 deeper than any
    # state: the junction, so R2 keeps a state at 32: vllm#37898's second sighting); R3
    # hits 32. Total 32. Interval 32: R1 also keeps states at 32 and 64, so R2 and R3
    # both hit 32. Total 64.
    r1 = list(range(64))
    r2 = list(range(32)) + list(range(100, 132))
    r3 = list(range(32)) + list(range(200, 232))
    assert hits({}, [r1, r2, r3]) == 32
    assert hits({"--prefix-cache-retention-interval": 32}, [r1, r2, r3]) == 64
    # An interval under two blocks keeps every block: as dense as 32 here.
    assert hits({"--prefix-cache-retention-interval": 16}, [r1, r2, r3]) == 64


def test_shared_prefix_junction_is_kept_on_the_second_sighting():
    # Requests sharing a 32-token prefix then differing: the first caches its replay
    # boundary (48) only; the second's KV runs 32 deeper than its (zero) state hit, so it
    # checkpoints the junction at 32; from the third on, each hits 32.
    seqs = [list(range(32)) + list(range(100 * k, 100 * k + 32)) for k in range(1, 6)]
    assert hits({}, seqs) == 3 * 32


@pytest.mark.parametrize("mode", [None, "align", "none"])
def test_mamba_cache_mode_has_no_effect(mode):
    # Deprecated in 0.33.0: the mode follows --enable-prefix-caching.
    assert hits({"--mamba-cache-mode": mode}, [P40, P40]) == 32


def test_mamba_block_size():
    # A hybrid in align mode overwrites it with the block: 60-token prompts hit 48 as by
    # default. An attention-free model checkpoints on the Mamba block: 32 → floor(59/32)·32.
    assert hits({"--mamba-block-size": 256}, [P60, P60]) == 48
    assert hits({}, [P60, P60], mamba_only()) == 48
    assert hits({"--mamba-block-size": 32}, [P60, P60], mamba_only()) == 32
    with pytest.raises(UserError, match="--mamba-block-size: can only be set"):
        MODEL.resolve({"--mamba-block-size": 32, "--enable-prefix-caching": False})


def test_one_shared_pool():
    cls = MODEL.policy({})
    pol = cls(TOY, CacheConfig(capacity=Capacity.split(10_000, 0.5)), token_workload([P40]))
    assert pol.capacity() == Capacity(10_000)
    assert pol.describe()["state_bytes"] == 1600      # 300-byte state padded to a page


# ---------------------------------------------------------------- prompts under a block
def test_prompts_under_the_hybrid_block_never_hit():
    # vllm#40696: kv 16 B/token, state 8448 B → block 16·ceil(8448/256) = 528. A 520-token
    # prompt (and a 528-token one: capped at 527) never hits; a 552-token one hits 528.
    cost = causal_toy_cost(kv=16, state=8448)
    assert layout(cost, MODEL.resolve({})).block_tokens == 528
    for n, expected in [(520, 0), (528, 0), (552, 528)]:
        p = list(range(n))
        assert hits({}, [p, p], cost) == expected, n
    # 520 and 528 tokens cannot hit; 530 (state at floor(529/528)·528) and 552 can
    wl = token_workload([list(range(520)), list(range(528)), list(range(530)),
                         list(range(552))])
    modes = MODEL.failure_modes({}, wl, cost)
    assert any(m.startswith("50 % of prompts (2 of 4) are at most the 528-token block")
               for m in modes), modes
    assert any("raised from 16 to 528 tokens" in m for m in modes), modes


def test_failure_modes_prefix_off_and_padding():
    wl = token_workload([P40, P40])
    modes = MODEL.failure_modes({"--enable-prefix-caching": False}, wl, TOY)
    assert modes[0].startswith("prefix caching is off")
    # 300-byte state in a 1600-byte page: 1300/1600 = 81 % padding
    assert any("padded from 300 to 1600 bytes: 81 %" in m for m in modes), modes
    assert MODEL.failure_modes({}, token_workload([]), TOY) == []


# ---------------------------------------------------------------- alignment fast vs slow
@pytest.mark.parametrize("block", [1, 16, 24, 48, 100])
def test_aligned_block_matches_search(block):
    for kv_1 in (1, 3, 100, 4096):
        for page in (1, 17, 300, 2_146_304, 10**6):
            assert aligned_block(block, kv_1, page) == aligned_block_ref(block, kv_1, page)


def test_aligned_block_qwen35_4b():
    # background/engines.md §2.2: fp32 SSM 2,146,304 B/layer over 4096 B/token/layer → 528
    assert aligned_block(16, 4096, 2_146_304) == 528


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("flags, where", [
    ({"--no-such-flag": 1}, "vllm flags"),
    ({"--enable-prefix-caching": "yes"}, "--enable-prefix-caching"),
    ({"--mamba-cache-mode": "all"}, "--mamba-cache-mode"),
    ({"--block-size": 0}, "--block-size"),
    ({"--mamba-block-size": -4}, "--mamba-block-size"),
    ({"--prefix-cache-retention-interval": -1}, "--prefix-cache-retention-interval"),
    ({"--mamba-ssm-cache-dtype": "int8"}, "--mamba-ssm-cache-dtype"),
])
def test_flag_errors(flags, where):
    with pytest.raises(UserError) as e:
        MODEL.resolve(flags)
    assert e.value.where == where


def test_a_block_trace_replays_on_the_id_grid_at_or_above_the_block():
    """A trace of 24-token ids cannot tell positions inside an id apart: vLLM's block
    becomes the next multiple of 24 (as the baselines replay such traces)."""
    wl = block_workload([(40, 0, (1, 2, 3))], block=24)
    policy = MODEL.policy({})(TOY, UNBOUNDED, wl)
    block = policy.layout.block_tokens
    assert block % 24 and policy.block == -(-block // 24) * 24
    replay_policy(MODEL.policy({}), wl, TOY, UNBOUNDED)


# ---------------------------------------------------------------- launch line
LAUNCH_FLAGS = {"--enable-prefix-caching": False, "--block-size": 32,
                "--prefix-cache-retention-interval": 4096,
                "--mamba-ssm-cache-dtype": "float32"}


def test_launch_line():
    assert MODEL.launch("Qwen/Qwen3.5-4B", {}, 8 << 30) == \
        "vllm serve Qwen/Qwen3.5-4B --kv-cache-memory-bytes 8589934592"
    assert MODEL.launch("m", {"--block-size": 16}, None) == "vllm serve m"
    assert MODEL.launch("Qwen/Qwen3.5-4B", LAUNCH_FLAGS, 1000) == (
        "vllm serve Qwen/Qwen3.5-4B --kv-cache-memory-bytes 1000 --no-enable-prefix-caching"
        " --block-size 32 --prefix-cache-retention-interval 4096"
        " --mamba-ssm-cache-dtype float32")
    assert MODEL.launch("m", {"--mamba-cache-mode": "align", "--mamba-block-size": 256},
                        None) == "vllm serve m --mamba-cache-mode align --mamba-block-size 256"


def _vllm_parser():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (the project never depends on an engine)")
    try:
        from vllm.engine.arg_utils import EngineArgs
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        # building the parser resolves defaults such as DeviceConfig's device type, which
        # needs a vLLM platform (CUDA, ROCm, a CPU build): a skip, not a failure
        parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    except Exception as e:
        pytest.skip(f"vllm's argument parser cannot be built here: {type(e).__name__}: {e}")
    return EngineArgs, parser


def test_launch_line_parses_in_vllm():
    _, parser = _vllm_parser()
    line = MODEL.launch("Qwen/Qwen3.5-4B", LAUNCH_FLAGS, 1000)
    args = parser.parse_args(shlex.split(line)[3:] + ["--model", "Qwen/Qwen3.5-4B"])
    assert (args.enable_prefix_caching, args.block_size, args.prefix_cache_retention_interval,
            args.mamba_ssm_cache_dtype, args.kv_cache_memory_bytes) == \
        (False, 32, 4096, "float32", 1000)


# ---------------------------------------------------------------- against vLLM's own code
def _vllm_core():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (the project never depends on an engine)")
    try:
        import torch
        from vllm.sampling_params import SamplingParams
        from vllm.utils.hashing import sha256
        from vllm.v1.core.kv_cache_manager import KVCacheManager
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.kv_cache_interface import (FullAttentionSpec, KVCacheConfig,
                                                KVCacheGroupSpec, MambaSpec,
                                                get_mamba_prefill_checkpoint_position)
        from vllm.v1.request import Request
    except Exception as e:
        pytest.skip(f"vllm's v1 core does not import here: {type(e).__name__}: {e}")
    return locals()


def vllm_hits(prompts, block: int) -> list[int]:
    """Each prompt through vLLM 0.33.0's KVCacheManager (one attention + one Mamba group in
    align mode, room for everything), one request at a time, split as the scheduler's
    `_mamba_block_aligned_split` does: at the shared-prefix junction and at the last
    cacheable block boundary, then to the prompt's end; freed when its prefill is done."""
    v = _vllm_core()
    attn = v["FullAttentionSpec"](block_size=block, num_kv_heads=1, head_size=8,
                                  dtype=v["torch"].float16)
    mamba = v["MambaSpec"](block_size=block, shapes=((4,),), dtypes=(v["torch"].float16,),
                           page_size_padded=attn.page_size_bytes, mamba_cache_mode="align")
    cfg = v["KVCacheConfig"](num_blocks=1 << 16, kv_cache_tensors=[],
                             kv_cache_groups=[v["KVCacheGroupSpec"](["attn"], attn),
                                              v["KVCacheGroupSpec"](["ssm"], mamba)],
                             prefix_cache_retention_interval=0, hash_block_size=block,
                             cache_hit_alignment_tokens=block)
    v["init_none_hash"](v["sha256"])
    mgr = v["KVCacheManager"](cfg, max_model_len=1 << 16, scheduler_block_size=block,
                              hash_block_size=block, enable_caching=True)
    hasher = v["get_request_block_hasher"](block, v["sha256"])
    hits = []
    for i, p in enumerate(prompts):
        req = v["Request"](str(i), list(p), v["SamplingParams"](max_tokens=1), None,
                           block_hasher=hasher)
        blocks, n, junction = mgr.get_computed_blocks(req)
        hits.append(n)
        req.shared_prefix_boundary = junction
        last = v["get_mamba_prefill_checkpoint_position"](len(p), block, False,
                                                          num_hash_lookahead_tokens=0)
        stops = sorted({s for s in (junction // block * block, last) if n < s < len(p)}
                       | {len(p)})
        done = n
        for k, s in enumerate(stops):
            assert mgr.allocate_slots(req, s - done, n if k == 0 else 0,
                                      blocks if k == 0 else None) is not None
            req.num_computed_tokens = done = s
            for m in mgr.coordinator.single_type_managers:
                if hasattr(m, "new_step_starts"):
                    m.new_step_starts()
        mgr.free(req)
    return hits


def shared_prefix_prompts(seed: int, n: int = 240) -> list[list[int]]:
    """`n` prompts: one of 8 system prompts (20-100 tokens), then a question that is new
    (0-60 tokens), a repeat of an earlier one, or an extension of an earlier prompt."""
    import random
    rng = random.Random(seed)
    systems = [[1000 * s + t for t in range(rng.randint(20, 100))] for s in range(8)]
    prompts: list[list[int]] = []
    for i in range(n):
        roll = rng.random()
        if prompts and roll < 0.2:
            p = list(rng.choice(prompts))
        elif prompts and roll < 0.35:
            p = rng.choice(prompts) + [10**6 + 100 * i + t for t in range(rng.randint(1, 40))]
        else:
            p = rng.choice(systems) + [10**6 + 100 * i + t for t in range(rng.randint(0, 60))]
        prompts.append(p)
    return prompts


def test_hits_match_vllm_kv_cache_manager():
    prompts = shared_prefix_prompts(seed=7)
    theirs = vllm_hits(prompts, 16)                   # skips where vllm does not import
    wl = token_workload(prompts)
    ours = replay_policy(MODEL.policy({}), wl, TOY, UNBOUNDED)
    assert ours.hit_tokens == sum(theirs), (ours.hit_tokens, sum(theirs))
    assert sum(theirs) > 0
