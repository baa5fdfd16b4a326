"""Flags and loaders shared by several subcommands."""

from __future__ import annotations

import argparse
import math

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
                   help="a JSONL trace: Mooncake block-hash lines or token lines "
                        "(session_id, turn_id, ts, input_tokens, output_tokens)"
                        + ("" if required else "; default: the built-in workload"))
    p.add_argument("--block-size", type=positive_int, default=None,
                   help="tokens per hash id of a block-hash trace (default: inferred)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip unparsable trace lines (counted in the report) instead of failing")


def load_source(args: argparse.Namespace):
    return load_model(args.model)


def dtypes_from(args: argparse.Namespace):
    dtype = parse_dtype(args.dtype, "--dtype") if args.dtype else None
    state = parse_dtype(args.state_dtype, "--state-dtype") if args.state_dtype else None
    return dtype, state


def capacity_from(args: argparse.Namespace) -> int | None:
    return parse_capacity(args.capacity) if args.capacity is not None else None
