"""Entry point of the benchmark suite: sweep, write results.json, plots and the results page.

    python -m benchmarks.run --suite paper [--quick] [--out DIR] [--jobs N | --ray [ADDRESS]]
                             [--seed S]

The full ``paper`` suite without ``--out`` regenerates docs/results/ (JSON + PNG) and the
generated section of docs/results.md: the one command behind every number on that page.
``--quick`` is the CI smoke run (written under out/benchmarks-quick by default). Traces
are read from ../shared/traces (beside the repository) or ``--traces DIR``; the quick
suite leaves out a trace it cannot find, the full suite stops (exit 2).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from marconi.cli.common import add_ray_argument, executor_from
from marconi.cli.extras import require
from marconi.errors import UserError

from benchmarks import plots, results as res, summary
from benchmarks.suites import SUITES, get_suite
from benchmarks.sweep import run_suite
from benchmarks.workloads import DEFAULT_TRACES_DIR, REPO

log = logging.getLogger(__name__)

DEFAULT_OUT = REPO / "docs" / "results"
DEFAULT_PAGE = REPO / "docs" / "results.md"
QUICK_OUT = REPO / "out" / "benchmarks-quick"
# the code whose uncommitted changes could change a number on the page
RESULT_CODE = ("marconi", "passes", "planner", "runtime", "benchmarks", "examples/models")
BEGIN, END = "<!-- BEGIN GENERATED: benchmarks.run -->", "<!-- END GENERATED -->"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="paper", choices=sorted(SUITES),
                   help="which suite to run (default: paper)")
    p.add_argument("--quick", action="store_true",
                   help="the small form of the suite (CI smoke test, about a minute)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help=f"where results.json and the plots go (default: {DEFAULT_OUT} for the "
                        f"full suite, {QUICK_OUT} for --quick)")
    p.add_argument("--page", type=Path, default=None, metavar="MD",
                   help="Markdown page whose generated section is rewritten (default: "
                        "docs/results.md for the full paper suite written to the default "
                        "--out; none otherwise)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: the number of CPUs)")
    add_ray_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the generated workloads")
    p.add_argument("--traces", type=Path, default=DEFAULT_TRACES_DIR, metavar="DIR",
                   help=f"folder of the Mooncake traces (default: {DEFAULT_TRACES_DIR})")
    p.add_argument("--no-plots", action="store_true", help="write results.json only")
    p.add_argument("--replot", action="store_true",
                   help="no sweep: redraw the plots and the page from the results.json "
                        "already in --out")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return p.parse_args(argv)


def machine(jobs: int, argv: list[str]) -> dict:
    """What the page must state: machine, commit, versions, command."""
    import matplotlib
    import numpy
    import torch

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        uname = " ".join(part for part in platform.uname() if part)
    return {"command": "python -m benchmarks.run " + " ".join(argv),
            "commit": git("rev-parse", "HEAD"),
            "dirty": _dirty(git("status", "--porcelain", "--untracked-files=no", "--",
                                *RESULT_CODE)),
            "uname": uname, "cpus": os.cpu_count(), "jobs": jobs,
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "matplotlib": matplotlib.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _dirty(porcelain: str) -> list[str]:
    return [line.split(maxsplit=1)[1] for line in porcelain.splitlines() if line.strip()]


class ProgressBar:
    """One line on stderr, redrawn per finished task (only on a terminal)."""

    def __init__(self, stream=sys.stderr, width: int = 28):
        self.stream, self.width, self.t0 = stream, width, time.perf_counter()

    def __call__(self, done: int, total: int, label: str) -> None:
        filled = self.width * done // max(total, 1)
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
                          f"{elapsed:5.0f} s  {label[:48]:<48}")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def splice(page: Path, generated: str) -> None:
    """Replace the text between the BEGIN/END markers of `page` with `generated`."""
    text = page.read_text() if page.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise UserError(str(page), f"no generated section; expected the markers {BEGIN} "
                        f"and {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{BEGIN}\n{generated}\n{END}{tail}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    out = args.out or (QUICK_OUT if args.quick or args.suite != "paper" else DEFAULT_OUT)
    page = args.page
    if page is None and args.out is None and args.suite == "paper" and not args.quick:
        page = DEFAULT_PAGE
    try:
        if args.replot:
            results = res.load(out)
            written = []
        else:
            suite = get_suite(args.suite, args.quick, args.seed)
            executor = None
            if args.ray is not None:
                require("ray", "--ray", "running on Ray")
                executor = executor_from(args)
            jobs = executor.workers if executor is not None else args.jobs
            meta = machine(jobs, argv)            # the code as it is when the sweep starts
            out.mkdir(parents=True, exist_ok=True)
            progress = ProgressBar() if sys.stderr.isatty() else None
            sweep = run_suite(suite, args.traces, jobs=max(1, args.jobs),
                              allow_missing=suite.quick, progress=progress, executor=executor)
            results = res.assemble(suite, sweep, meta)
            written = [res.write(results, out)]
        if not args.no_plots:
            written += plots.write_all(results, out)
        prefix = os.path.relpath(out, page.parent) + "/" if page else ""
        generated = summary.markdown(results, prefix)
        (out / "summary.md").write_text(generated + "\n")
        if page is not None:
            splice(page, generated)
            written.append(page)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(results['records']) + len(results['references'])} results "
          f"({results['meta']['seconds']:.0f} s); wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
