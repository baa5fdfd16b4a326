"""Traces as real tools write them: floor and ceil id counts, ids of unknown chunk size,
out-of-order and non-finite timestamps, Qwen-Bailian lines; each checked by a closed form."""

from __future__ import annotations

import json

import pytest

import marconi.passes
from marconi.cli import main
from marconi.cli.render import skipped_note
from marconi.errors import TraceError
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.simulator import run_policy
from marconi.runtime.trace_ids import infer_block_size
from marconi.runtime.sim.trace_stats import prefix_stats
from marconi.runtime.workload import load_trace
from helpers import EXAMPLES, paper_7b_cost


def write(tmp_path, rows, name="t.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def block(ts, length, ids, out=0) -> dict:
    return {"timestamp": ts, "input_length": length, "output_length": out, "hash_ids": ids}


def infinite(workload):
    """The unbounded cache's replay, checked against the plain-trie figures."""
    result = run_policy("infinite", workload, paper_7b_cost(),
                        CacheConfig(Capacity.shared(10**12)))
    stats = prefix_stats(workload)
    assert result.token_hit_rate == pytest.approx(stats.ideal_token_hit_rate, abs=1e-12)
    assert result.block_hit_rate == pytest.approx(stats.ideal_id_hit_rate, abs=1e-12)
    return result


# ---------------------------------------------------------------- floor and ceil counts

def test_a_full_block_count_is_accepted_and_its_tail_never_hits(tmp_path):
    # The line issue #12 quotes: 139 ids for 71175 tokens of 512 (139·512 = 71168; 7 left).
    rows = [block(0, 71175, list(range(139))), block(1, 71175, list(range(139)))]
    w = load_trace(write(tmp_path, rows), block_size=512)
    assert w.unhashed_tail_lines == 2 and w.describe()["unhashed_tail_lines"] == 2
    a, b = w.requests
    assert len(a.input_ids) == len(b.input_ids) == 140 and a.input_ids[:139] == b.input_ids[:139]
    assert a.input_ids[139] != b.input_ids[139]
    assert {a.input_ids[139], b.input_ids[139]}.isdisjoint(range(139))
    assert a.input_tokens == 71175                       # the tail still counts as input
    r = infinite(w)
    # the second request hits its 139 full blocks, never its 7-token tail
    assert r.hit_tokens == 139 * 512 and r.block_hit_rate == 139 / 280
    assert r.prefill_flops == pytest.approx(2 * float(paper_7b_cost().prefill_flops(71175, 0)))


def test_floor_counts_infer_their_block_size(tmp_path):
    # floor(L / 4) ids: 10 → 2, 17 → 4, 33 → 8, 64 → 16. No size fits them all by ceil.
    rows = [block(0, 10, [1, 2]), block(1, 17, [1, 2, 3, 4]),
            block(2, 33, [1, 2, 3, 4, 5, 6, 7, 8]), block(3, 64, list(range(1, 17)))]
    w = load_trace(write(tmp_path, rows))
    assert (w.block_size, w.block_size_rule.value, w.block_size_inferred) == (4, "inferred", True)
    assert w.unhashed_tail_lines == 3                    # 64 = 16 full blocks: no tail
    r = infinite(w)
    # hits 8 (ids 1,2), 16 (1..4), 32 (1..8) full-block tokens; the tails never
    assert r.hit_tokens == 8 + 16 + 32


@pytest.mark.parametrize("rows, size, tails", [
    pytest.param([(100, 7), (100, 6), (50, 4), (50, 3)], 16, 2, id="mix-16"),
    pytest.param([(1000, 2), (750, 2), (499, 1)], 512, 0, id="ceil-512"),
    pytest.param([(1000, 1)], 1024, 0, id="one-id-prefers-ceil"),
    pytest.param([(100, 6)], 16, 1, id="floor-power-of-two"),
    pytest.param([(5, 0), (40, 2)], 16, 2, id="empty-ids-shorter-than-a-block"),
])
def test_inference_over_a_mix_of_floor_and_ceil_lines(tmp_path, rows, size, tails):
    assert infer_block_size(rows, "t") == size
    w = load_trace(write(tmp_path, [block(i, L, list(range(n))) for i, (L, n) in
                                    enumerate(rows)]))
    assert w.block_size == size and w.unhashed_tail_lines == tails


def test_inference_names_the_line_and_the_flags_when_no_size_fits(tmp_path):
    path = write(tmp_path, [block(0, 100, list(range(7))), block(1, 100, [1, 2])])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: hash_ids: 2 ids for input_length 100 "
                                         r"fit blocks of 34\.\.99 tokens") as e:
        load_trace(path)
    for flag in ("--block-size N", "--tokens-per-id N", "--tokens-per-id spread"):
        assert flag in str(e.value)


def test_a_given_block_size_refuses_other_counts(tmp_path):
    path = write(tmp_path, [block(0, 40, [1, 2, 3]), block(1, 40, [1, 2, 3, 4, 5])])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: hash_ids: 5 ids, but input_length 40 "
                                         r"is 2 full blocks of 16 tokens \(3 with"):
        load_trace(path, block_size=16)
    w = load_trace(path, block_size=16, skip_bad_lines=True)
    assert w.skipped_lines == 1 and len(w.requests) == 1


# ---------------------------------------------------------------- ids of unknown size

# Chunks of 10 and 20 tokens, then 15: no one block size gives every count.
CHUNKS = [block(0, 30, [7, 8]), block(1, 45, [7, 8, 9]), block(2, 12, [7, 5])]


def test_unknown_chunk_sizes_defeat_inference(tmp_path):
    with pytest.raises(TraceError, match=r"t\.jsonl:3: .*--tokens-per-id spread"):
        load_trace(write(tmp_path, CHUNKS))


def test_tokens_per_id_reads_each_id_as_n_tokens(tmp_path):
    w = load_trace(write(tmp_path, CHUNKS), tokens_per_id=10)
    assert (w.block_size, w.block_size_rule.value) == (10, "tokens-per-id")
    assert [len(r.input_ids) for r in w.requests] == [3, 5, 2]    # ceil(L / 10)
    assert (w.unhashed_tail_lines, w.truncated_lines) == (2, 0)
    # request 2 shares ids 7, 8 (20 tokens), request 3 shares 7 (10 tokens)
    assert infinite(w).hit_tokens == 20 + 10


def test_tokens_per_id_drops_ids_past_the_input(tmp_path):
    w = load_trace(write(tmp_path, [block(0, 15, [7, 8, 9]), block(1, 20, [7, 8, 9])]),
                   tokens_per_id=10)
    assert [r.input_ids for r in w.requests] == [(7, 8), (7, 8)] and w.truncated_lines == 2
    # the first request's last id covers 5 tokens: the second, a full id 8, matches it
    # by id as any trace with equal ids would; its hit is capped by its own 20 tokens
    assert infinite(w).hit_tokens == 20


def test_spread_sizes_a_chunk_once_and_cuts_it_on_the_grid(tmp_path):
    w = load_trace(write(tmp_path, CHUNKS), tokens_per_id="spread", block_size=5)
    assert (w.block_size, w.block_size_rule.value) == (5, "spread")
    # line 1 sizes 7 and 8 at 15 each; line 2 gives 9 the 15 left; line 3 gives 5 one token
    # (7 already covers its 12) and 5 starts past the input: dropped
    assert [len(r.input_ids) for r in w.requests] == [6, 9, 3]
    assert (w.unhashed_tail_lines, w.truncated_lines) == (0, 1)
    a, b, c = (r.input_ids for r in w.requests)
    assert b[:6] == a and c[:2] == a[:2] and c[2] not in a
    # hits: 30 tokens (chunks 7, 8), then 10 (chunk 7's two full grid blocks; the block
    # ending at token 12 is a last block no one cached)
    assert infinite(w).hit_tokens == 30 + 10


def test_spread_counts_a_shared_prefix_at_the_first_sighting_size(tmp_path):
    # Spread per line, ids 1 and 2 would be 50 tokens in line 1 and 100 in line 2. A cached
    # path covers one token count, so they stay 50; id 3 takes the 200 left.
    w = load_trace(write(tmp_path, [block(0, 100, [1, 2]), block(1, 300, [1, 2, 3])]),
                   tokens_per_id="spread", block_size=10)
    assert infinite(w).hit_tokens == 100
    assert load_trace(write(tmp_path, [block(0, 100, [1, 2]), block(1, 300, [1, 2, 3])]),
                      tokens_per_id="spread").block_size == 16      # the default grid


def test_spread_leaves_no_tail_when_the_chunks_cover_the_input(tmp_path):
    # 7 tokens over 3 new ids: sizes 3, 2, 2 (the remainder goes to the first ones)
    w = load_trace(write(tmp_path, [block(0, 7, [1, 2, 3])]), tokens_per_id="spread",
                   block_size=1)
    assert w.unhashed_tail_lines == 0 and len(w.requests[0].input_ids) == 7


# ---------------------------------------------------------------- timestamps

@pytest.mark.parametrize("fmt", ["mooncake", "token"])
def test_decreasing_timestamps_are_sorted_stably_and_counted(tmp_path, fmt):
    times = [0, 20, 10, 20, 5]

    def row(i, t):
        if fmt == "token":
            return {"session_id": i, "turn_id": 0, "ts": t, "input_tokens": [i + 1],
                    "output_tokens": []}
        return block(t, 16, [i])

    w = load_trace(write(tmp_path, [row(i, t) for i, t in enumerate(times)]), block_size=16)
    scale = 1000.0 if fmt == "token" else 1.0
    assert [r.arrival_ms for r in w.requests] == [scale * t for t in (0, 5, 10, 20, 20)]
    first = [r.input_ids[0] - (fmt == "token") for r in w.requests]
    assert first == [0, 4, 2, 1, 3]                      # equal times keep file order
    assert w.reordered_lines == 2 and w.describe()["reordered_lines"] == 2


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("fmt", ["mooncake", "token"])
def test_non_finite_timestamps_are_bad_lines(tmp_path, value, fmt):
    if fmt == "token":
        good = json.dumps({"session_id": 1, "ts": 0, "input_tokens": [1], "output_tokens": []})
        bad = good.replace('"ts": 0', f'"ts": {value}')
    else:
        good = json.dumps(block(0, 16, [1]))
        bad = good.replace('"timestamp": 0', f'"timestamp": {value}')
    path = write(tmp_path, [good, bad, good])
    key = "ts" if fmt == "token" else "timestamp"
    with pytest.raises(TraceError, match=rf"t\.jsonl:2: {key}: .*expected a finite time"):
        load_trace(path)
    w = load_trace(path, skip_bad_lines=True)
    assert w.skipped_lines == 1 and len(w.requests) == 2


# ---------------------------------------------------------------- Qwen-Bailian

def bailian(chat, parent, ts, length, ids, turn=1, kind="text") -> dict:
    # field set of alibaba-edu/qwen-bailian-usagetraces-anon, README "Data Specification"
    return {"chat_id": chat, "parent_chat_id": parent, "timestamp": ts,
            "input_length": length, "output_length": 10, "type": kind, "turn": turn,
            "hash_ids": ids}


def test_qwen_bailian_lines_are_16_token_blocks_in_seconds(tmp_path):
    rows = [bailian(1, -1, 0.5, 48, [11, 12, 13]),               # 3 full blocks
            bailian(2, 1, 1.25, 70, [11, 12, 13, 14], turn=2),   # floor(70/16) = 4
            bailian(3, -1, 2.0, 20, [11, 15], kind="search"),    # ceil(20/16) = 2
            bailian(4, 2, 3.0, 80, [11, 12, 13, 14, 16], turn=3)]
    w = load_trace(write(tmp_path, rows))
    assert (w.trace_format, w.block_size, w.block_size_rule.value) == ("qwen-bailian", 16,
                                                                       "format")
    assert [r.arrival_ms for r in w.requests] == [500.0, 1250.0, 2000.0, 3000.0]
    assert [r.session for r in w.requests] == ["1", "1", "3", "1"]
    assert w.unhashed_tail_lines == 1
    # hits: 48 (11, 12, 13), 16 (11), 64 (11..14; request 2's tail is its own)
    assert infinite(w).hit_tokens == 48 + 16 + 64


def test_a_qwen_bailian_line_without_its_fields_is_a_bad_line(tmp_path):
    row = bailian(2, 1, 1.0, 16, [1])
    del row["turn"]
    path = write(tmp_path, [bailian(1, -1, 0.0, 16, [1]), row])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: a mooncake line in a qwen-bailian trace"):
        load_trace(path)


def test_unsigned_64_bit_ids_are_read_as_their_signed_view(tmp_path):
    big = 2**64 - 5
    w = load_trace(write(tmp_path, [block(0, 32, [big, 1]), block(1, 32, [big, 2])]))
    assert w.requests[0].input_ids == (big - 2**64, 1)
    with pytest.raises(TraceError, match="outside 64 bits"):
        load_trace(write(tmp_path, [block(0, 32, [2**64, 1])]))


# ---------------------------------------------------------------- command line

@pytest.fixture
def hand_built_model(monkeypatch):
    monkeypatch.setattr(marconi.passes, "build_cost_model",
                        lambda source, dtype=None, state_dtype=None, layout="model":
                        paper_7b_cost())


MODEL = str(EXAMPLES / "marconi-7b-hybrid.yaml")


FLOOR = [block(0, 10, [1, 2]), block(1, 17, [1, 2, 3, 4]), block(2, 33, list(range(1, 9)))]


@pytest.mark.parametrize("rows, flags, rule, block_size, tails, hit", [
    pytest.param(CHUNKS, ["--tokens-per-id", "spread", "--block-size", "5"], "spread", 5, 0,
                 40, id="spread"),
    pytest.param(CHUNKS, ["--tokens-per-id", "10"], "tokens-per-id", 10, 2, 30,
                 id="tokens-per-id"),
    pytest.param(FLOOR, [], "inferred", 4, 3, 8 + 16, id="floor"),
])
def test_simulate_reports_the_rule_in_json(hand_built_model, capsys, tmp_path, rows, flags,
                                           rule, block_size, tails, hit):
    code = main(["simulate", MODEL, "--trace", write(tmp_path, rows), "--capacity", "1GB",
                 "--policy", "infinite", "--format", "json", *flags])
    out, _ = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    w = doc["workload"]
    assert (w["block_size_rule"], w["block_size"], w["unhashed_tail_lines"]) == (
        rule, block_size, tails)
    assert w["truncated_lines"] == (rule == "spread") and w["reordered_lines"] == 0
    assert doc["results"][0]["hit_tokens"] == hit


def test_text_reports_name_the_trace_facts(tmp_path):
    w = load_trace(write(tmp_path, [block(5, 30, [7, 8]), "garbled", block(1, 45, [7, 8, 9])]),
                   tokens_per_id=10, skip_bad_lines=True)
    assert skipped_note(w) == (", 1 bad line skipped, 2 lines with an unhashed tail (never "
                               "hit), 1 line reordered by timestamp, 10 tokens per id")
    assert skipped_note(load_trace(write(tmp_path, [block(0, 32, [1, 2])]))) == ""


@pytest.mark.parametrize("flags, message", [
    pytest.param(["--tokens-per-id", "8", "--block-size", "16"],
                 "--tokens-per-id: 8 with --block-size 16", id="conflict"),
    pytest.param([], "--tokens-per-id spread", id="inference-fails"),
])
def test_simulate_trace_errors_exit_2_with_one_line(hand_built_model, capsys, tmp_path, flags,
                                                    message):
    path = write(tmp_path, CHUNKS)
    code = main(["simulate", MODEL, "--trace", path, "--capacity", "1GB",
                 "--policy", "infinite", *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_a_bad_tokens_per_id_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["simulate", MODEL, "--trace", "t.jsonl", "--capacity", "1GB",
              "--tokens-per-id", "even"])
    assert e.value.code == 2
    assert "--tokens-per-id: 'even'; expected an integer ≥ 1 or 'spread'" in \
        capsys.readouterr().err
