import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts seeded, with the machine's thread count and non-deterministic algorithms
    allowed (a run's config may change both process-wide)."""
    torch.manual_seed(0)
    yield
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def data_dir() -> Path:
    """The offline copies of the data sets (CI and developer machines have them)."""
    env = os.environ.get("MIXVAE_DATA")
    path = Path(env) if env else SHARED_DATA
    assert path.is_dir(), f"the data sets are expected at {path} (set MIXVAE_DATA)"
    return path
