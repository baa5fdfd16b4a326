"""Flags and loaders shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import sys

from marconi.errors import UserError
from marconi.runtime.capacity import Capacity
from marconi.runtime.trace_ids import SPREAD
from marconi.spec import load_model
from marconi.units import parse_capacity, parse_dtype


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected one ≥ 1") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; expected an integer ≥ 1")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected seconds > 0") \
            from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}; expected a finite number of seconds > 0")
    return value


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a model.yaml (see docs/model-yaml.md), a Hugging Face config.json, "
                        "or a folder holding a config.json")
    p.add_argument("--dtype", default=None,
                   help="dtype of KV and activations (default: the spec's dtype; bfloat16 for "
                        "a config.json)")
    p.add_argument("--state-dtype", default=None,
                   help="dtype of recurrent states (default: the spec's state_dtype; what the "
                        "model's own cache allocates for a config.json)")


def add_format_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (default) for people; json prints one JSON document on stdout")


def add_capacity_argument(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--capacity", required=required, default=None,
                   help="cache capacity in bytes: 40GiB, 512MiB (binary), 40GB (decimal) or "
                        "4e10" + ("" if required else "; default: chosen from the workload"))


def add_trace_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--trace", required=required, default=None, metavar="T",
                   help="a JSONL trace: Mooncake block-hash lines (timestamp ms, input_length, "
                        "output_length, hash_ids), Qwen-Bailian lines (those plus chat_id, "
                        "parent_chat_id, turn; timestamp s; 16 tokens per id) or token lines "
                        "(session_id, turn_id, ts, input_tokens, output_tokens); replayed in "
                        "timestamp order"
                        + ("" if required else "; default: the built-in workload"))
    p.add_argument("--block-size", type=positive_int, default=None, metavar="N",
                   help="tokens per hash id: each line has floor or ceil(input_length / N) ids "
                        "(default: 16 for Qwen-Bailian, else inferred); with --tokens-per-id "
                        "spread, the grid the chunks are cut on (default 16)")
    p.add_argument("--tokens-per-id", type=tokens_per_id, default=None, metavar="N|spread",
                   help="for ids of chunks whose size is unknown: N reads every id as N tokens "
                        "whatever the count (ids past input_length dropped, tokens past the ids "
                        "never hit); 'spread' sizes each new id by spreading the line's "
                        "remaining tokens evenly over its new ids (docs/simulator.md)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip unparsable trace lines (counted in the report) instead of failing")


def tokens_per_id(text: str) -> int | str:
    """argparse type of --tokens-per-id: an integer ≥ 1 or 'spread'."""
    if text == SPREAD:
        return SPREAD
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}; expected an integer ≥ 1 or "
                                         f"{SPREAD!r}") from None


def trace_options(args: argparse.Namespace) -> dict:
    """`load_trace` keyword arguments from the flags of `add_trace_arguments`."""
    n = args.tokens_per_id
    if isinstance(n, int) and args.block_size is not None and args.block_size != n:
        raise UserError("--tokens-per-id", f"{n} with --block-size {args.block_size}: ids of "
                        f"{n} tokens are {n}-token blocks; expected one of the two (--block-size"
                        " sets the grid only with --tokens-per-id spread)")
    return {"block_size": args.block_size, "tokens_per_id": n,
            "skip_bad_lines": args.skip_bad_lines}


def load_source(args: argparse.Namespace):
    return load_model(args.model)


def dtypes_from(args: argparse.Namespace):
    dtype = parse_dtype(args.dtype, "--dtype") if args.dtype else None
    state = parse_dtype(args.state_dtype, "--state-dtype") if args.state_dtype else None
    return dtype, state


def capacity_from(args: argparse.Namespace) -> Capacity | None:
    """--capacity (and --state-fraction, where the command has it) as a Capacity; None
    when --capacity is not given."""
    if args.capacity is None:
        return None
    total = parse_capacity(args.capacity)
    fraction = getattr(args, "state_fraction", None)
    return Capacity.shared(total) if fraction is None else Capacity.split(total, fraction)


def warmup_fraction(text: str) -> float:
    """argparse type of --warmup: a fraction in [0, 1) (a usage error, exit 2, otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected a fraction in "
                                         "[0, 1)") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1); expected the fraction of "
                                         "the requests that only warm the cache up (at least "
                                         "one request must be counted)")
    return value


def add_warmup_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup", type=warmup_fraction, default=0.0, metavar="FRACTION",
                   help="the first FRACTION of the requests fill the cache but are not counted "
                        "in any figure, the bound's included (cache studies measure the last "
                        "half: 0.5); default 0")


def warmup_note(warmup: dict, total: int) -> str:
    """The text reports' line stating the counted window ("" without a warm-up)."""
    n = warmup["requests"]
    if not n:
        return ""
    return (f"Warm-up: the first {n:,} of {total:,} requests ({100 * warmup['fraction']:g} %) "
            f"filled the cache and are not counted; figures cover the last {total - n:,}.")


RAY_LOCAL = "local"          # --ray without a value: start a Ray instance on this machine


def add_ray_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const=RAY_LOCAL, default=None, metavar="ADDRESS",
                   help="run the parallel replays as Ray tasks: without ADDRESS on a Ray "
                        "instance started on this machine (all its CPUs), with 'auto' or "
                        "ray://HOST:PORT on an existing cluster (all its CPUs); --jobs is "
                        "then not used (needs the ray extra)")


def executor_from(args: argparse.Namespace):
    """The executor --jobs and --ray ask for; with --ray, Ray is started or joined here
    and its dashboard address printed on stderr."""
    from marconi.runtime.sim.executor import executor_for
    from marconi.runtime.sim.ray_executor import RayExecutor
    if getattr(args, "ray", None) is None:
        return executor_for(args.jobs)
    executor = RayExecutor(address=None if args.ray == RAY_LOCAL else args.ray)
    url = executor.connect()
    print(f"Ray: {executor.workers} CPUs" + (f", dashboard at {url}" if url else
                                            " (no dashboard: install ray[default] for one)"),
          file=sys.stderr)
    return executor

