import os
from pathlib import Path

import pytest
import torch

# Two cores are shared by everything in CI; a single intra-op thread per test
# process keeps small-tensor tests from oversubscribing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (reference files are only in the developers' checkout)")
    return SHARED


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests: they gain nothing from a
    second thread, and on shared cores a second oneDNN thread spin-waits (5x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
