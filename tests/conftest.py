"""Shared pytest fixtures for the svl test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from svl.utils import data_root, seed_everything


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same RNG state, so random inputs are reproducible."""
    seed_everything(0)


@pytest.fixture
def shared_data() -> Path:
    """The real shared data folder; tests that need it are skipped where it is absent."""
    root = data_root(required=False)
    if root is None:
        pytest.skip("shared data not found (set SVL_DATA)")
    return root


@pytest.fixture
def svl_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty SVL_CACHE for tests that must not touch the user's cache."""
    cache = tmp_path / "svl-cache"
    monkeypatch.setenv("SVL_CACHE", str(cache))
    return cache
