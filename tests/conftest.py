"""Shared fixtures: the built-in scene (tiny) and the real data in ../shared/data."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.fixture(scope="session")
def tiny_teacher(tiny_scene, tmp_path_factory):
    """A small hashgrid trained on the tiny built-in scene, saved with its cameras: a conversion teacher."""
    from radistill.distill.engine import TrainConfig, train
    from radistill.distill.teachers import ImageTeacher
    from radistill.fields import create_field
    from radistill.io.checkpoint import save_field

    torch.manual_seed(0)
    field = create_field("hashgrid", tiny_scene.aabb, log2_table=14, max_resolution=128, samples_per_ray=96)
    train(field, ImageTeacher.from_scene(tiny_scene),
          TrainConfig(steps=200, batch_rays=1024, target_samples=1 << 15, progress=False))
    path = tmp_path_factory.mktemp("teacher") / "hashgrid.safetensors"
    save_field(path, field, extra_metadata={"cameras": tiny_scene.cameras[tiny_scene.train_indices].to_dict(),
                                            "background": tiny_scene.background.tolist()})
    return path


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """``radistill ARGS`` in a subprocess (``from conftest import run_cli``)."""
    return subprocess.run([sys.executable, "-m", "radistill.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def run_cli_here(capsys, *args) -> subprocess.CompletedProcess:
    """``radistill ARGS`` in this process (``radistill.cli.main``), for checks of error messages
    and exit statuses that need no fresh interpreter: a subprocess spends 1.5 s importing."""
    from radistill.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # the argument parser's own errors
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["radistill", *map(str, args)], code, out.out, out.err)


def interrupt_and_resume(monkeypatch, cls, call: int, run):
    """Run ``run(resume=False)`` with ``cls.render_image`` raising KeyboardInterrupt (Ctrl-C) at
    its ``call``-th call in training mode, then ``run(resume=True)`` undisturbed; returns the
    resumed result."""
    original = cls.render_image
    calls = {"n": 0}

    def interrupting(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == call:
                raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "render_image", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)
    monkeypatch.setattr(cls, "render_image", original)
    return run(resume=True)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every tensor of two modules' state dicts is identical."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
