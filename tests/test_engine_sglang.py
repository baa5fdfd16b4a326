"""SGLang 0.5.23's engine model (runtime/engines/sglang.py): one worked example per flag,
the input_len − 1 match rule, the two eviction lists, the flags' validation, the launch
line, failure modes, and (where SGLang imports) the launch line through SGLang's parser.

Unless a test says otherwise the engine is ``SGLangModel(mamba_chunk_size=4)`` (a 4-token
scan chunk instead of FLA's 64, so hand-built prompts stay short; page 1 → a 4-token state
grid) and the model ``toy_cost(kv_per_token=1, state=10)``: 1 B of KV per token, a 10-B
float16 SSM state (5 elements). Requests carry no output unless given one, so a finished
request's committed length is its prompt. A hit is the deepest state at most L_in − 1
tokens deep.
"""

from __future__ import annotations

import importlib.util
import math
from array import array
import shlex

import pytest

from helpers import toy_cost, token_workload
from marconi.errors import UserError
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.engines import engine
from marconi.runtime.engines.sglang import MODEL, SGLangModel
from marconi.runtime.sim.simulator import replay_policy

ENG = SGLangModel(mamba_chunk_size=4)
TOY = toy_cost(kv_per_token=1, state=10)
UNBOUNDED = CacheConfig(capacity=Capacity.unbounded())

SP = list(range(100, 108))                 # an 8-token shared prefix
A, B = list(range(200, 208)), list(range(300, 308))
# two conversations, interleaved: each second turn extends its first by 4 tokens
AB = [A, B, A + [1, 2, 3, 4], B + [1, 2, 3, 4]]


def hits(flags, seqs, cost=TOY, config=UNBOUNDED, eng=ENG, outputs=None) -> int:
    w = token_workload(seqs, outputs=outputs)
    return replay_policy(eng.policy(flags), w, cost, config).hit_tokens


def bounded(total: int) -> CacheConfig:
    return CacheConfig(capacity=Capacity.shared(total))


def test_registered_and_versioned():
    assert engine("sglang") is MODEL
    assert MODEL.version == "0.5.23" and MODEL.mamba_chunk_size == 64
    for f in MODEL.flags:
        assert f.default in f.choices and len(f.choices) <= 6, f.name
        assert f.source.startswith("python/sglang/srt/"), f.name


# ---------------------------------------------------------------- --mamba-radix-cache-strategy
BRANCHES = [SP + [1, 2, 3, 4], SP + [5, 6, 7, 8], SP + [9, 9, 9, 9]]


@pytest.mark.parametrize("strategy, expected", [
    # no_buffer: each request's state sits at its own end (12); the later prompts match the
    # 8-token prefix in KV only, where no state is: 0
    ("no_buffer", 0),
    # extra_buffer: r0 tracks 12; r1 matches 8 tokens of KV, so it tracks the branch point
    # 8 (< its end 12) instead; r2 hits 8
    ("extra_buffer", 8),
    ("extra_buffer_lazy", 8),      # the same tracking; fewer working slots
    ("auto", 8),                   # auto = extra_buffer (overlap scheduler on)
])
def test_strategy_tracks_branch_points(strategy, expected):
    assert hits({"--mamba-radix-cache-strategy": strategy}, BRANCHES) == expected


@pytest.mark.parametrize("strategy, expected", [
    # --max-mamba-cache-size 4 (5 slots with the padding one); one running request holds
    # 1 + tracking slots: extra_buffer 3 → 1 cached state: B1's state evicts A1's, A2's
    # evicts B1's: 0 hits
    ("extra_buffer", 0),
    # lazy 2 → 2 cached states: A2 hits 8; its new state (12) evicts B1's (older): B2 misses
    ("extra_buffer_lazy", 8),
    # no_buffer 1 → 3 cached states: A2 and B2 hit 8 each
    ("no_buffer", 16),
])
def test_strategy_working_slots_take_state_memory(strategy, expected):
    flags = {"--mamba-radix-cache-strategy": strategy, "--max-mamba-cache-size": 4}
    assert hits(flags, AB, config=bounded(1050)) == expected
    lay = ENG.memory_layout(flags, TOY, 1050)
    assert lay.cache_slots == {"extra_buffer": 1, "extra_buffer_lazy": 2, "no_buffer": 3}[strategy]
    assert lay.kv_bytes == 1050 - 5 * 10


def test_running_requests_is_a_parameter():
    flags = {"--mamba-radix-cache-strategy": "extra_buffer_lazy", "--max-mamba-cache-size": 4}
    assert ENG.memory_layout(flags, TOY, 1050).running_slots == 2
    two = SGLangModel(running_requests=2, mamba_chunk_size=4)
    with pytest.raises(UserError, match="max-mamba-cache-size.*2 running requests hold 4"):
        two.memory_layout(flags, TOY, 1050)


# ---------------------------------------------------------------- --mamba-full-memory-ratio
@pytest.mark.parametrize("ratio, slots, expected", [
    # 1100·r/(1+r) bytes for states, ⌊(budget − 10)/10⌋ slots + 1 padding slot:
    # r = 0.05 → 52.4 B → 4 slots, 1 for the cache (extra_buffer holds 3): 0 hits
    (0.05, 4, 0),
    # r = 0.06 → 62.3 B → 5 slots, 2 for the cache: A2 hits 8, B2 misses (as above)
    (0.06, 5, 8),
])
def test_memory_ratio_sizes_the_state_pool(ratio, slots, expected):
    flags = {"--mamba-full-memory-ratio": ratio}
    lay = ENG.memory_layout(flags, TOY, 1100)
    assert (lay.slots, lay.kv_bytes) == (slots, 1100 - (slots + 1) * 10)
    assert hits(flags, AB, config=bounded(1100)) == expected


def test_default_ratio_splits_like_sglang():
    # 0.9: 19 000 · 0.9 / 1.9 = 9000 B → ⌊8990 / 10⌋ = 899 slots; KV 19 000 − 9000 = 10 000
    lay = ENG.memory_layout({}, TOY, 19_000)
    assert (lay.slots, lay.kv_bytes, lay.cache_slots, lay.max_running) == (899, 10_000, 896,
                                                                          179)


# ---------------------------------------------------------------- --max-mamba-cache-size
@pytest.mark.parametrize("size, expected", [(4, 0), (5, 8)])   # 1 vs 2 cached states
def test_max_mamba_cache_size_fixes_the_slots(size, expected):
    assert hits({"--max-mamba-cache-size": size}, AB, config=bounded(1050)) == expected
    assert ENG.memory_layout({"--max-mamba-cache-size": size}, TOY, 1050).kv_bytes == \
        1050 - (size + 1) * 10


# ---------------------------------------------------------------- --mamba-track-interval
OUT = list(range(50, 59))                  # 9 output tokens: committed length 8 + 9 − 1 = 16


@pytest.mark.parametrize("interval, diverge, extend", [
    # interval 8: decode tracks at 16 (> the prompt's 8); the finished request donates that
    # one state only: a prompt leaving its path at 8 misses, one following it hits 16
    (8, 0, 16),
    # interval 32: no decode boundary before 16; the prefill's state at 8 is donated
    (32, 8, 8),
])
def test_track_interval_decides_the_donated_state(interval, diverge, extend):
    flags = {"--mamba-track-interval": interval}
    assert hits(flags, [A, A + [60, 61, 62, 63]], outputs=[OUT, []]) == diverge
    assert hits(flags, [A, A + OUT[:8] + [70, 71, 72, 73]], outputs=[OUT, []]) == extend


# ---------------------------------------------------------------- --page-size
@pytest.mark.parametrize("page, expected", [
    (None, 8),   # grid 4: r1 tracks the branch point 8, r2 hits it (as for the strategy)
    # grid lcm(max(4, 8), 8) = 8: r0's end state is floor(12, 8) = 8 already; r1 and r2
    # hit 8 each
    (8, 16),
    (16, 0),     # grid 16: no 12-token prompt reaches a grid point: nothing is cached
])
def test_page_size_sets_the_state_grid(page, expected):
    assert hits({"--page-size": page}, BRANCHES) == expected


def test_page_size_grid_of_a_state_free_model():
    # no recurrent layer: any cached KV hits, in whole pages: 11 matchable tokens → 8
    state_free = toy_cost(kv_per_token=1, state=0)
    assert hits({"--page-size": 8}, [SP + [1, 2, 3, 4], SP + [1, 2, 3, 4]],
                cost=state_free) == 8
    assert hits({}, [SP + [1, 2, 3, 4], SP + [1, 2, 3, 4]], cost=state_free) == 11


# ---------------------------------------------------------------- --enable-int8-mamba-checkpoint
def test_int8_checkpoints_double_the_cached_states():
    big = toy_cost(kv_per_token=1, state=256)        # 128 float16 elements
    flags = {"--max-mamba-cache-size": 4, "--enable-int8-mamba-checkpoint": True}
    lay = ENG.memory_layout(flags, big, 2280)
    # int8: 128 B of elements + one float16 scale per 128 elements; 2·4 slots in their own
    # pool (outside the budget); KV = 2280 − 5·256 = 1000
    assert (lay.cache_slot_bytes, lay.cache_slots, lay.kv_bytes) == (130, 8, 1000)
    # bf16 states: 4 − 3 = 1 cached state → 0 hits; int8: 8 → A2 and B2 hit 8 each
    assert hits({"--max-mamba-cache-size": 4}, AB, cost=big, config=bounded(2280)) == 0
    assert hits(flags, AB, cost=big, config=bounded(2280)) == 16


# ---------------------------------------------------------------- --mamba-ssm-dtype
@pytest.mark.parametrize("dtype, expected", [
    # 6000 · 0.9 / 1.9 = 2842 B for states. float32 (512-B slots): 4 slots, 1 cached
    # state: 0 hits. float16 / bfloat16 (256 B): 10 slots, 7 cached: A2, B2 hit 8 each
    ("float32", 0), (None, 16), ("bfloat16", 16),
])
def test_ssm_dtype_sets_the_slot_bytes(dtype, expected):
    big = toy_cost(kv_per_token=1, state=256)
    flags = {"--mamba-ssm-dtype": dtype}
    assert ENG.memory_layout(flags, big, 6000).slot_bytes == (512 if dtype == "float32" else 256)
    assert hits(flags, AB, cost=big, config=bounded(6000)) == expected


# ---------------------------------------------------------------- --radix-eviction-policy
X = list(range(400, 408))
HOT = [X, X + [1, 2, 3, 4], list(range(500, 508)), list(range(600, 608)), X + [9, 9, 9, 9]]


@pytest.mark.parametrize("policy, expected", [
    # 10 B/token of KV, a 200-B KV pool, 2-B states (plenty of slots). X (hit count 2 after
    # X2's insert walk), its tail 8..12 (1), Y (1) fill 200 B; Z needs 80 more. KV leaves go:
    # lru: the tail (oldest), then X itself (older than Y): X3 misses → only X2's 8
    ("lru", 8),
    ("priority", 8),      # every request priority 0: lru
    # lfu: the tail (1 hit), then Y (1 hit) before X (2 hits): X3 hits 8 too → 16
    ("lfu", 16),
    ("slru", 16),         # X reached the protected segment (2 hits); Y had not
])
def test_eviction_policy_orders_kv_leaves(policy, expected):
    cost = toy_cost(kv_per_token=10, state=2)
    flags = {"--radix-eviction-policy": policy, "--max-mamba-cache-size": 20}
    assert ENG.memory_layout(flags, cost, 242).kv_bytes == 200
    assert hits(flags, HOT, cost=cost, config=bounded(242)) == expected


def test_state_eviction_keeps_internal_kv():
    # 2 cached states (lazy, 4 slots). X1 → state 8; X2 hits 8 (consuming it at t=1) and
    # adds 12 (created at t=1); Y needs a state: the mamba LRU's oldest is X's 8 (same time,
    # older node): dropped, its KV kept. X + 1,2,3,4,5,5,5,5 still hits 12 through that KV.
    flags = {"--mamba-radix-cache-strategy": "extra_buffer_lazy", "--max-mamba-cache-size": 4}
    seqs = [X, X + [1, 2, 3, 4], list(range(500, 508)), X + [1, 2, 3, 4, 5, 5, 5, 5]]
    assert hits(flags, seqs, config=bounded(1050)) == 8 + 12


# ---------------------------------------------------------------- the input_len − 1 rule
def test_identical_prompt_cannot_hit_its_own_end_state():
    # A's state sits at 8; a repeat matches at most 7 tokens: miss, and it tracks the
    # branch point floor(7, 4) = 4; the third repeat hits 4 (sglang#21158)
    assert hits({}, [A, A, A]) == 4


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("flags, where", [
    ({"--mamba-cache-mode": "all"}, "sglang flags"),
    ({"--mamba-radix-cache-strategy": "v2"}, "--mamba-radix-cache-strategy"),
    ({"--mamba-full-memory-ratio": 0}, "--mamba-full-memory-ratio"),
    ({"--max-mamba-cache-size": -3}, "--max-mamba-cache-size"),
    ({"--mamba-track-interval": 0}, "--mamba-track-interval"),
    ({"--page-size": 6}, "--page-size"),                     # neither divides the 4 chunk
    ({"--page-size": 8, "--mamba-radix-cache-strategy": "no_buffer"}, "--page-size"),
    ({"--page-size": 8, "--mamba-track-interval": 20}, "--mamba-track-interval"),
    ({"--enable-int8-mamba-checkpoint": "yes"}, "--enable-int8-mamba-checkpoint"),
    ({"--radix-eviction-policy": "fifo"}, "--radix-eviction-policy"),
    ({"--mamba-ssm-dtype": "fp8"}, "--mamba-ssm-dtype"),
])
def test_flag_errors_name_the_flag(flags, where):
    with pytest.raises(UserError) as err:
        ENG.policy(flags)
    assert err.value.where == where


def test_too_small_a_state_pool_is_an_error():
    with pytest.raises(UserError, match="leaving none for the cache") as err:
        ENG.memory_layout({"--max-mamba-cache-size": 3}, TOY, 1050)
    assert err.value.where == "--max-mamba-cache-size"


# ---------------------------------------------------------------- launch line
LAUNCH = {"--mamba-radix-cache-strategy": "extra_buffer_lazy", "--page-size": 64,
          "--mamba-track-interval": 256, "--enable-int8-mamba-checkpoint": True,
          "--radix-eviction-policy": "slru", "--mamba-ssm-dtype": "bfloat16",
          "--mamba-full-memory-ratio": 1.5}


def test_launch_line_exact():
    assert MODEL.launch("Qwen/Qwen3-Next-80B-A3B-Instruct", LAUNCH, 10**10) == (
        "python -m sglang.launch_server --model-path Qwen/Qwen3-Next-80B-A3B-Instruct "
        "--mamba-radix-cache-strategy extra_buffer_lazy --mamba-full-memory-ratio 1.5 "
        "--page-size 64 --enable-int8-mamba-checkpoint --radix-eviction-policy slru "
        "--mamba-ssm-dtype bfloat16")
    assert MODEL.launch("m", {}, None) == "python -m sglang.launch_server --model-path m"


# ---------------------------------------------------------------- failure modes
def test_failure_modes_measure_shares():
    w = token_workload([A, A, [1, 2], SP + [1, 2, 3, 4]], outputs=[[], [], [], OUT])
    modes = ENG.failure_modes({"--mamba-track-interval": 8}, w, TOY)
    assert modes == [
        "25 % of prompts are shorter than the 4-token state grid: their prefill tracks no "
        "state, so nothing after their hit is ever cached",
        "25 % of requests decode past a 8-token track boundary: a finished request donates "
        "one state, so their prefill or branch-point state is dropped for the decode one",
        "25 % of prompts repeat an earlier prompt whose state would sit at its very end: "
        "SGLang matches at most input_len − 1 tokens, so that state is one token too deep "
        "to hit"]
    assert ENG.failure_modes({}, token_workload([SP + [1, 2, 3, 4, 5]]), TOY) == []


# ---------------------------------------------------------------- SGLang's own parser
def _sglang_parser():
    if importlib.util.find_spec("sglang") is None:
        pytest.skip("sglang is not installed (the project never depends on an engine)")
    try:
        import argparse
        from sglang.srt.server_args import ServerArgs
    except Exception as e:       # a GPU-bound import chain on this machine
        pytest.skip(f"sglang.srt.server_args does not import here: {e!r}")
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)     # what server_args.py:prepare_server_args parses with
    return parser


def test_launch_line_parses_with_sglang():
    parser = _sglang_parser()
    argv = shlex.split(MODEL.launch("Qwen/Qwen3-Next-80B-A3B-Instruct", LAUNCH, None))[3:]
    ns = parser.parse_args(argv)
    assert (ns.mamba_radix_cache_strategy, ns.mamba_full_memory_ratio, ns.page_size,
            ns.enable_int8_mamba_checkpoint, ns.radix_eviction_policy, ns.mamba_ssm_dtype) == \
        ("extra_buffer_lazy", 1.5, 64, True, "slru", "bfloat16")


# ---------------------------------------------------------------- the index against a scan
def _scan_victim(cache, index, kv_short: bool):
    """The slow path: every live unlocked node, the smallest key of the list in use."""
    nodes, stack = [], list(cache.root.children.values())
    while stack:
        n = stack.pop()
        nodes.append(n)
        stack.extend(n.children.values())
    leaves = [n for n in nodes if not n.children and not n.lock_ref]
    states = [n for n in nodes if n.ckpt and not n.lock_ref]
    if kv_short or not states:
        return min(leaves, key=lambda n: (*index._priority(n), n.uid), default=None)
    return min(states, key=lambda n: (n.state_access, n.uid))


@pytest.mark.parametrize("policy", ["lru", "lfu", "slru"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_index_victim_matches_a_scan(policy, seed):
    from helpers import random_workload
    flags = {"--radix-eviction-policy": policy, "--max-mamba-cache-size": 12}
    w = random_workload(seed, n=60, vocab=3, max_len=16)
    pol = ENG.policy(flags)(TOY, bounded(1150), w)
    from marconi.runtime.sim.replay import Replay
    replay = Replay(w, TOY, pol)
    replay.run()
    cache = replay.cache
    for kv_short in (True, False):
        cache.kv_need = 10**9 if kv_short else 0
        got = cache.index.victim()
        cache.index.release()
        want = _scan_victim(cache, cache.index, kv_short)
        assert (got[0] if got else None) is want
    assert cache.evictions > 0


# ---------------------------------------------------------------- SGLang's own radix cache
# Replays one seeded trace through SGLang 0.5.23's UnifiedRadixCache (FULL + MAMBA
# components, real CPU pools: HybridReqToTokenPool, HybridLinearKVPool,
# TokenToKVPoolAllocator) and through our model, per request. SGLang's scheduler decides
# which state to track from the cache's match result (`mamba_branching_seqlen`); its
# ScheduleBatch needs a model forward, so the test applies that rule
# (schedule_batch.py:_mamba_radix_cache_v2_req_prepare_for_extend: prefix + ⌊extend/g⌋·g,
# or the branch point when it lies inside; decode: the last track boundary) to SGLang's own
# match results, and inserts as cache_finished_req would (key up to the tracked state, one
# state slot from the Mamba allocator). Pools are large enough that nothing is evicted.
GRID = 4


def _trace(seed: int = 7, n: int = 240):
    import random
    rng = random.Random(seed)
    systems = [[rng.randrange(1000) for _ in range(rng.randint(6, 40))] for _ in range(8)]
    seqs, outs, history = [], [], []
    for _ in range(n):
        if history and rng.random() < 0.4:
            base = rng.choice(history)          # a later turn of an earlier conversation
        else:
            base = rng.choice(systems)
        ids = base + [rng.randrange(1000) for _ in range(rng.randint(1, 20))]
        out = [rng.randrange(1000) for _ in range(rng.randint(0, 12))]
        seqs.append(ids)
        outs.append(out)
        history.append(ids + out)
    return seqs, outs


def _sglang_tree(extra_buffer: bool):
    """SGLang's cache on CPU, or a skip naming what does not import."""
    if importlib.util.find_spec("sglang") is None:
        pytest.skip("sglang is not installed (the project never depends on an engine)")
    try:
        import torch
        from sglang.srt.configs.mamba_utils import Mamba2CacheParams, Mamba2StateShape
        from sglang.srt.environ import envs
        from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
        from sglang.srt.mem_cache.cache_init_params import CacheInitParams
        from sglang.srt.mem_cache.memory_pool import HybridLinearKVPool, HybridReqToTokenPool
        from sglang.srt.mem_cache.unified_cache.component_type import ComponentType
        from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache
        from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler
    except Exception as e:
        pytest.skip(f"SGLang's radix cache does not import here: {e!r}")
    args = ServerArgs(model_path="dummy", page_size=1)
    args._mamba_cache_chunk_size = GRID       # the fixtures' pre-seeded scan chunk
    set_global_server_args_for_scheduler(args)
    with envs.SGLANG_MAMBA_SSM_DTYPE.override("bfloat16"):
        shape = Mamba2StateShape.create(tp_world_size=1, intermediate_size=32, n_groups=1,
                                        num_heads=2, head_dim=16, state_size=4, conv_kernel=4)
        params = Mamba2CacheParams(shape=shape, layers=[0, 1, 2])
    pool = HybridReqToTokenPool(size=8, mamba_size=2000, mamba_spec_state_size=8,
                                max_context_len=4096, device="cpu", enable_memory_saver=False,
                                cache_params=params, mamba_layer_ids=[0, 1, 2],
                                enable_mamba_extra_buffer=extra_buffer)
    kv = HybridLinearKVPool(size=60_000, dtype=torch.bfloat16, page_size=1, head_num=1,
                            head_dim=8, full_attention_layer_ids=[3], device="cpu",
                            mamba_pool=pool.mamba_pool)
    alloc = TokenToKVPoolAllocator(size=60_000, dtype=torch.bfloat16, device="cpu",
                                   kvcache=kv, need_sort=False)
    tree = UnifiedRadixCache(params=CacheInitParams(
        req_to_token_pool=pool, token_to_kv_pool_allocator=alloc, page_size=1,
        disable=False, tree_components=(ComponentType.FULL, ComponentType.MAMBA),
        enable_mamba_extra_buffer=extra_buffer))
    return tree, alloc, pool


def _sglang_hits(strategy: str, seqs, outs, track_interval: int) -> list[int]:
    extra = strategy != "no_buffer"
    tree, alloc, pool = _sglang_tree(extra)
    from sglang.srt.mem_cache.base_prefix_cache import InsertParams, MatchPrefixParams
    from sglang.srt.mem_cache.radix_cache import RadixKey as _Key

    def RadixKey(ids):                     # its keys are int64 arrays
        return _Key(array("q", ids))

    track_grid = math.lcm(GRID, track_interval)
    hits_ = []
    for ids, out in zip(seqs, outs):
        m = tree.match_prefix(MatchPrefixParams(key=RadixKey(ids[:len(ids) - 1])))
        prefix = m.device_prefix_len
        hits_.append(prefix)
        committed = ids + out[:-1]            # the last sampled token has no KV
        if not extra:
            n = len(committed)
        else:
            n = prefix
            end = prefix + (len(ids) - prefix) // GRID * GRID
            if end > prefix:
                n = end
                b = m.mamba_branching_seqlen
                if b is not None and prefix < b < end and (b - prefix) % GRID == 0:
                    n = b
            decode = len(committed) // track_grid * track_grid
            if decode > len(ids):
                n = decode
        if n > prefix:
            tree.insert(InsertParams(key=RadixKey(committed[:n]), value=alloc.alloc(n),
                                     mamba_value=pool.mamba_allocator.alloc(1)))
    return hits_


@pytest.mark.parametrize("strategy, interval", [("no_buffer", 256), ("extra_buffer", 256),
                                                ("extra_buffer", 8)])
def test_hits_match_sglangs_own_cache(strategy, interval):
    seqs, outs = _trace()
    theirs = _sglang_hits(strategy, seqs, outs, interval)
    from marconi.runtime.sim.replay import Replay
    flags = {"--mamba-radix-cache-strategy": strategy, "--mamba-track-interval": interval}
    w = token_workload(seqs, outputs=outs)
    replay = Replay(w, TOY, ENG.policy(flags)(TOY, UNBOUNDED, w))
    replay.run()
    assert sum(theirs) > 0
    assert replay.hits == theirs


def test_a_block_trace_replays_on_the_id_grid_at_or_above_the_grid():
    """128-token ids: the 64-token state grid becomes 128 (positions inside an id cannot be
    told apart). Request 0 (3 ids, 384 tokens) tracks its input end, 384 = 3·128; request 1
    (4 ids, 512 tokens) matches at most 511 tokens, i.e. 3 whole ids: 384 hit tokens."""
    from helpers import block_workload
    wl = block_workload([(384, 0, (1, 2, 3)), (512, 0, (1, 2, 3, 4))], block=128)
    policy = MODEL.policy({})
    assert policy(TOY, UNBOUNDED, wl).describe()["state_grid_tokens"] == 128
    assert replay_policy(policy, wl, TOY, UNBOUNDED).hit_tokens == 384
