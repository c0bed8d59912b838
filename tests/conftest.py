"""Shared test fixtures.

Real public data (``../shared/data``) is reached through ``MM_LIVE_REAL_DATA``; tests that need it
use the ``real_data`` fixture and skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os

# Before torch or faiss load: their OpenMP workers otherwise spin against each other between calls
# (faiss + torch test files measured 15.6 s with spinning, 6.2 s without).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    return Path(os.environ.get("MM_LIVE_REAL_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = real_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MM_LIVE_REAL_DATA to the shared/data folder)")
    return root


@pytest.fixture(scope="session")
def bigbuckbunny(real_data: Path) -> Path:
    path = real_data / "clips" / "bigbuckbunny.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found (set MM_LIVE_REAL_DATA to the shared/data folder)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _offline_and_small():
    # Nothing may reach a model hub; keep torch to the machine's 2 cores.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:
        pass
    yield
