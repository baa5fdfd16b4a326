"""`marconi-plan`: the command line. Thin over the library; the only place that prints.

    marconi-plan MODEL [--trace T] [--capacity C] [-o runtime.yaml]   # the main job (plan)
    marconi-plan inspect MODEL                                          # sizes and FLOPs
    marconi-plan simulate MODEL --trace T --capacity C --policy …      # replay policies
    marconi-plan bound MODEL --trace T --capacity C                     # offline optimum
    marconi-plan engines MODEL --trace T --capacity C [--engine …]     # engine flags vs plan

Exit codes: 0 success; 2 bad user input (one line on stderr, no traceback);
1 internal or solver failure. With ``--format json`` stdout holds exactly one JSON
document on every path: the result, or ``{"error": {...}}`` beside the stderr line.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback

from marconi.cli import bound, engines, extras, inspect, plan, simulate
from marconi.cli.render import emit_json, error_document
from marconi.errors import SolverError, UserError

SUBCOMMANDS = {"plan": plan, "inspect": inspect, "simulate": simulate, "bound": bound,
               "engines": engines}
PROG = "marconi-plan"


VERBOSE = re.compile(r"-v+|--verbose")


class UsageExit(SystemExit):
    """A command line argparse refused (exit 2); `message` is what stderr got."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise UsageExit(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Plan and run prefix caching for hybrid (attention + recurrent) LLMs. "
                    "Without a subcommand, runs `plan`: the main job.",
        epilog="Run `marconi-plan SUBCOMMAND --help` for each subcommand's flags. "
               "Exit codes: 0 ok, 2 bad input, 1 internal or solver failure.")
    parser.add_argument("--version", action="version", version=f"{PROG} 0.1.0")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress to stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        p.add_argument("-v", "--verbose", action="count", default=0, dest="verbose_after",
                       help="log progress to stderr (-vv for debug), as before the subcommand")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as a Namespace: `MODEL …` without a subcommand is `plan MODEL …`,
    and ``-v`` counts wherever it stands (before or after the subcommand). Raises
    `UsageExit` (exit 2) on a usage error."""
    argv = list(argv)
    i = 0
    while i < len(argv) and VERBOSE.fullmatch(argv[i]):
        i += 1                                          # global flags before the subcommand
    if i < len(argv) and argv[i] not in SUBCOMMANDS and argv[i] not in ("-h", "--help",
                                                                         "--version"):
        argv.insert(i, "plan")                          # `marconi-plan MODEL …` is `plan`
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(argv)
    try:
        args = parse(argv)
    except UsageExit as e:
        if as_json:
            emit_json(error_document("usage", 2, e, e.message))
        raise
    if args.command is None:
        build_parser().print_help()
        return 2
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    def fail(kind: str, code: int, e: BaseException, message: str) -> int:
        print(f"{PROG}: {message}", file=sys.stderr)
        if as_json:
            emit_json(error_document(kind, code, e, message))
        return code

    try:
        extras.check(args)                  # a missing optional dependency: before any work
        rc = int(args.run(args) or 0)
        sys.stdout.flush()                  # a closed pipe shows here, not at exit
        return rc
    except BrokenPipeError:                 # `marconi-plan … | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                          # 128 + SIGPIPE, as a shell pipeline expects
    except UserError as e:
        return fail("input", 2, e, " ".join(as_flags(e).splitlines()))     # one line, always
    except SolverError as e:
        return fail("solver", 1, e, f"solver failure: {e}")
    except KeyboardInterrupt as e:
        return fail("interrupted", 130, e, "interrupted")
    except Exception as e:  # noqa: BLE001 - the last line of defence: exit 1 with context
        traceback.print_exc(file=sys.stderr)
        return fail("internal", 1, e, f"internal error: {type(e).__name__}: {e}")


# library parameters → the flags that set them (the library names its parameters, since it
# is also called from Python, e.g. by marconi.wrap; the command line speaks in flags)
FLAGS = {"capacity": "--capacity", "state_fraction": "--state-fraction",
         "chunk_tokens": "--chunk-size", "block_tokens": "--vllm-block-size",
         "device": "--device", "builtin_workload": "--trace", "method": "--method",
         "layout": "--layout", "policy": "--policy", "warmup": "--warmup",
         "recency": "--recency", "bootstrap_multiplier": "--bootstrap-multiplier"}


def as_flags(error: UserError) -> str:
    """The error's message with a parameter name it starts with replaced by its flag."""
    flag = FLAGS.get(error.where)
    return f"{flag}: {error.message}" if flag else str(error)


def wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for ``--format json`` (known before parsing, so that
    a usage error can be reported as JSON too)."""
    return "--format=json" in argv or any(
        a == "--format" and b == "json" for a, b in zip(argv, argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
