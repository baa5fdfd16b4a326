"""Fixtures and collection hooks; shared constants and builders live in helpers.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, TRACES


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly on machines without CUDA."""
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread: on 2 shared cores, thread-pool
    synchronisation costs more than the work. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def traces_dir():
    if not TRACES.exists():
        pytest.skip(f"shared traces not found at {TRACES}")
    return TRACES


@pytest.fixture(scope="session")
def interpreted_files(request):
    """`get(test_file) -> {case id: result}` of the file's `check` on its `CASES` under the
    Triton interpreter (marconi/kernels/testing.py). Every selected file that has an
    `interpreted` fixture runs in ONE child process on first use: the child's start-up
    (Python, torch, Triton) costs more than most files' cases. A kernel file uses it as

        @pytest.fixture(scope="module")
        def interpreted(interpreted_files):
            return interpreted_files(__file__)
    """
    from marconi.kernels.testing import IMPORT_ERROR, run_interpreted, run_interpreted_files
    files = sorted({str(Path(item.path).resolve()) for item in request.session.items
                    if "interpreted" in item.fixturenames})
    results = {}

    def get(test_file):
        test_file = str(Path(test_file).resolve())
        if test_file not in files:                     # not seen at collection: on its own
            return run_interpreted(test_file)
        if not results:
            results.update(run_interpreted_files(files))
        if IMPORT_ERROR in results[test_file]:
            raise RuntimeError(f"interpreter import of {test_file} failed:\n"
                               f"{results[test_file][IMPORT_ERROR]}")
        return results[test_file]
    return get


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The folder of one `python -m benchmarks.run --suite smoke --jobs 1 --no-plots` run, in
    a subprocess as CI would: test_benchmarks.py and test_benchmarks_rerun.py both read it
    (each loads its own copy of results.json), so the suite runs once per session."""
    out = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite", "smoke",
                           "--jobs", "1", "--no-plots", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
