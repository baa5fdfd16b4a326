"""`marconi-plan`: the command line. Thin over the library; the only place that prints.

    marconi-plan MODEL [--trace T] [--capacity C] [-o runtime.yaml]   # the main job (plan)
    marconi-plan inspect MODEL                                          # sizes and FLOPs
    marconi-plan simulate MODEL --trace T --capacity C --policy …      # replay policies
    marconi-plan bound MODEL --trace T --capacity C                     # offline optimum

Exit codes: 0 success; 2 bad user input (one line on stderr, no traceback);
1 internal or solver failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from marconi.cli import bound, inspect, plan, simulate
from marconi.errors import SolverError, UserError

SUBCOMMANDS = {"plan": plan, "inspect": inspect, "simulate": simulate, "bound": bound}
PROG = "marconi-plan"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(argv) and argv[i] in ("-v", "-vv", "--verbose"):
        i += 1                                          # global flags before the subcommand
    if i < len(argv) and argv[i] not in SUBCOMMANDS and argv[i] not in ("-h", "--help",
                                                                         "--version"):
        argv.insert(i, "plan")                          # `marconi-plan MODEL …` is `plan`
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        rc = int(args.run(args) or 0)
        sys.stdout.flush()                  # a closed pipe shows here, not at exit
        return rc
    except BrokenPipeError:                 # `marconi-plan … | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                          # 128 + SIGPIPE, as a shell pipeline expects
    except UserError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except SolverError as e:
        print(f"{PROG}: solver failure: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: exit 1 with context
        traceback.print_exc(file=sys.stderr)
        print(f"{PROG}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
