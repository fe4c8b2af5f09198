import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def data_dir() -> Path:
    """The offline copies of the data sets (CI and developer machines have them)."""
    env = os.environ.get("MIXVAE_DATA")
    path = Path(env) if env else SHARED_DATA
    assert path.is_dir(), f"the data sets are expected at {path} (set MIXVAE_DATA)"
    return path
