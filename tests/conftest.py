"""Fixtures and collection hooks; shared constants and builders live in helpers.py."""

import pytest

from helpers import TRACES


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
