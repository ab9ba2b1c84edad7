import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from radistill.cameras import Rays
from radistill.errors import CheckpointError
from radistill.fields import NEURAL_KINDS, create_field
from radistill.io.checkpoint import load_field, read_checkpoint, save_field

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def some_rays(n=64):
    g = torch.Generator().manual_seed(0)
    o = torch.randn(n, 3, generator=g)
    o = 2.5 * o / o.norm(dim=-1, keepdim=True)
    d = torch.nn.functional.normalize(-o + 0.3 * torch.randn(n, 3, generator=g), dim=-1)
    return Rays(o, d, d, torch.zeros(n), torch.full((n,), 10.0))


def scrambled(kind, **kw):
    field = create_field(kind, AABB, **kw)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.3 * torch.randn_like(p))
    field.update_occupancy(torch.Generator().manual_seed(0))
    return field


@pytest.mark.parametrize("kind", NEURAL_KINDS)
def test_round_trip_renders_are_bit_identical(kind, tmp_path):
    kw = {"log2_table": 12} if kind == "hashgrid" else {}
    field = scrambled(kind, **kw)
    if kind.startswith("tensorf"):
        field.on_train_step(10_000)  # upsampled: the file holds grids larger than the config's start
    path = save_field(tmp_path / "f.safetensors", field)
    back = load_field(path)
    assert type(back) is type(field) and back.config == field.config
    rays = some_rays()
    a = field.render(rays, torch.ones(3)).rgb
    b = back.render(rays, torch.ones(3)).rgb
    assert torch.equal(a, b)
    tensors, meta = read_checkpoint(path)
    assert meta["kind"] == kind and meta["format_version"] == "1"
    assert json.loads(meta["aabb"]) == AABB.tolist()
    assert json.loads(meta["config"])["samples_per_ray"] == field.config.samples_per_ray


def test_truncated_checkpoint_is_named(tmp_path):
    path = save_field(tmp_path / "f.safetensors", create_field("mlp", AABB))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="f.safetensors: not a readable safetensors file"):
        load_field(path)


def test_foreign_files_are_rejected(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not a radistill checkpoint"):
        load_field(plain)
    pick = tmp_path / "model.ckpt"
    pick.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=2))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_field(pick)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_field(tmp_path / "missing.safetensors")


def test_unknown_kind_in_metadata(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"field.aabb": AABB}, path, metadata={"format": "radistill", "format_version": "1", "kind": "voxels",
                                                   "config": "{}", "aabb": json.dumps(AABB.tolist())})
    with pytest.raises(CheckpointError, match="unknown kind 'voxels'"):
        load_field(path)


def test_tensors_that_do_not_match_the_config(tmp_path):
    field = create_field("hashgrid", AABB, log2_table=12)
    path = save_field(tmp_path / "h.safetensors", field)
    tensors, meta = read_checkpoint(path)
    cfg = json.loads(meta["config"])
    cfg["log2_table"] = 13  # the config now promises a bigger table than the file holds
    save_file(tensors, tmp_path / "bad.safetensors", metadata={**meta, "config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match=r"do not match its hashgrid config: shape mismatch encoder\.grid\.table"):
        load_field(tmp_path / "bad.safetensors")
    del tensors["field.decoder.net.0.weight"]
    save_file(tensors, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=r"missing tensors \['decoder\.net\.0\.weight'\]"):
        load_field(tmp_path / "missing.safetensors")


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_field(tmp_path / "f.safetensors", create_field("mlp", AABB))
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_field(path, scrambled("mlp"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"], "no temporary file is left behind"


def test_the_kernel_backend_is_not_saved_with_the_field(tmp_path):
    """A field trained with one backend (Triton on a GPU, say) loads anywhere with the default."""
    field = create_field("hashgrid", torch.tensor([[-1.0] * 3, [1.0] * 3]), log2_table=10, backend="torch")
    save_field(tmp_path / "f.safetensors", field)
    _, meta = read_checkpoint(tmp_path / "f.safetensors")
    assert "backend" not in json.loads(meta["config"])
    loaded = load_field(tmp_path / "f.safetensors")
    assert loaded.config.backend == "auto" and loaded.encoder.grid.backend == "auto"
