"""Shared fixtures: the built-in scene (tiny) and the real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_scene():
    """The built-in scene at 32x32: 16 train + 2 test views, rendered once per session."""
    from radistill.datasets.procedural import make_builtin_scene

    return make_builtin_scene(n_train=16, n_test=2, resolution=32)


@pytest.fixture(scope="session")
def tiny_scene_dir(tmp_path_factory):
    """The same tiny scene written to disk in NeRF Blender format."""
    from radistill.datasets.procedural import write_builtin_scene

    return write_builtin_scene(tmp_path_factory.mktemp("builtin"), n_train=16, n_test=2, resolution=32)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
