"""Instant-NGP snapshots (``.msgpack``, gzip ``.ingp``) as teachers.

The snapshots here are written to the layout Instant-NGP and tiny-cuda-nn use, as read in:
NVlabs/instant-ngp ``src/testbed.cu`` (``save_snapshot``: the network config at the top level,
``snapshot.{version, params_type, n_params, params_binary, density_grid_binary, aabb, nerf.dataset}``;
``.ingp`` is the msgpack through zstr, i.e. gzip), ``include/neural-graphics-primitives/nerf_network.h``
(parameters: density MLP, then RGB MLP, then the hash grid; the RGB network sees the density
network's 16 outputs then SH of the direction; density ``exp(h[0])``, colour ``sigmoid``),
``src/nerf_loader.cu`` (world to network frame: ``p * scale + offset``, axes cycled to ``(y, z, x)``),
and tiny-cuda-nn ``src/fully_fused_mlp.cu`` (row-major ``[out, in]`` matrices, no biases, widths
padded to 16) and ``include/tiny-cuda-nn/encodings/grid.h`` (the grid layout radistill's hash grid
shares). The weights are chosen so that the density and colour have closed forms that depend on
the axis cycle, the parameter order, the matrix orientation and the padding.
"""

from __future__ import annotations

import gzip
import math

import msgpack
import numpy as np
import pytest
import torch
from conftest import run_cli

from radistill.errors import CheckpointError
from radistill.fields.hashgrid import level_layout
from radistill.fields.instant_ngp import morton3
from radistill.io.instant_ngp import load_instant_ngp

LEVELS, FEATURES, LOG2_T, BASE, GROWTH = 2, 2, 8, 4, 2.0  # level 0 dense (4^3), level 1 hashed (8^3 > 2^8)
SCALE = 0.25


def params() -> np.ndarray:
    d1 = np.zeros((16, 16)); d1[0, 0] = 1.0                                  # hidden 0 = grid feature 0
    d2 = np.zeros((16, 16)); d2[0, 0] = 0.5; d2[1, 0] = 1.0                  # h0 = hidden0 / 2, h1 = hidden0
    r1 = np.zeros((16, 32)); r1[0, 16] = 1.0; r1[1, 19] = 1.0; r1[2, 19] = -1.0; r1[3, 1] = 1.0
    r2 = np.eye(16)
    r3 = np.zeros((16, 16)); r3[0, 0] = 1.0; r3[1, 1] = 1.0; r3[1, 2] = -1.0; r3[2, 3] = 0.125
    layout = level_layout(LEVELS, LOG2_T, BASE, GROWTH)
    assert layout[0]["dense"] and not layout[1]["dense"]
    grid = np.zeros((layout[-1]["offset"] + layout[-1]["size"], FEATURES))
    res = layout[0]["resolution"]
    for idx in range(res**3):  # level 0, feature 0: the cell corner's x index
        grid[idx, 0] = idx % res
    return np.concatenate([m.reshape(-1) for m in (d1, d2, r1, r2, r3, grid)]).astype(np.float16)


OFFSET = [0.4, 0.5, 0.6]
NGP_BOX = [[-0.5] * 3, [1.5] * 3]  # aabb_scale 2: two cascades of the density grid


def cascades() -> np.ndarray:
    """Cascade 0 (network x in [0, 1]): 1 where x < 0.5, 0 (seen, empty) elsewhere. Cascade 1 (x in
    [-0.5, 1.5]): 1 where x < -0.25, -1 (never seen) elsewhere, so that the mean over both
    cascades is negative and only Instant-NGP's own threshold (cascade 0, unseen as 0) keeps the
    0 cells empty."""
    i, j, k = (a.reshape(-1) for a in np.meshgrid(np.arange(128), np.arange(128), np.arange(128), indexing="ij"))
    codes = morton3(torch.from_numpy(i), torch.from_numpy(j), torch.from_numpy(k)).numpy()
    values = np.zeros((2, 128**3), dtype=np.float16)
    x0 = (i + 0.5) / 128  # cell centres in network units
    x1 = ((i + 0.5) / 128 - 0.5) * 2 + 0.5
    values[0, codes] = np.where(x0 < 0.5, 1.0, 0.0)
    values[1, codes] = np.where(x1 < -0.25, 1.0, -1.0)
    return values


def world_from_network(n: torch.Tensor) -> torch.Tensor:
    """Network-frame points back to the world: the network's (x, y, z) are the world's (y, z, x)."""
    v = n[:, [2, 0, 1]]
    return (v - torch.tensor(OFFSET)) / SCALE


def snapshot(**changes) -> dict:
    p = params()
    doc = {
        "encoding": {"otype": "HashGrid", "type": "Hash", "n_levels": LEVELS, "n_features_per_level": FEATURES,
                     "log2_hashmap_size": LOG2_T, "base_resolution": BASE, "per_level_scale": GROWTH},
        "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None", "n_neurons": 16,
                    "n_hidden_layers": 1},
        "dir_encoding": {"otype": "Composite", "nested": [{"n_dims_to_encode": 3, "otype": "SphericalHarmonics",
                                                            "degree": 4}, {"otype": "Identity"}]},
        "rgb_network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None", "n_neurons": 16,
                        "n_hidden_layers": 2},
        "snapshot": {"version": 1, "mode": "nerf", "params_type": "__half", "n_params": int(p.size),
                     "params_binary": p.tobytes(), "density_grid_size": 128,
                     "density_grid_binary": cascades().tobytes(),
                     "aabb": {"min": NGP_BOX[0], "max": NGP_BOX[1]},
                     "nerf": {"aabb_scale": 2, "dataset": {"scale": SCALE, "offset": OFFSET, "aabb_scale": 2}}},
    }
    for key, value in changes.items():
        target = doc
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
    return doc


def write(path, doc, compress=False) -> None:
    data = msgpack.packb(doc, use_bin_type=True)
    path.write_bytes(gzip.compress(data) if compress else data)


def test_morton_codes_interleave_x_y_z_bits():
    codes = morton3(torch.tensor([1, 0, 0, 2, 3]), torch.tensor([0, 1, 0, 0, 5]), torch.tensor([0, 0, 1, 0, 1]))
    assert codes.tolist() == [1, 2, 4, 8, 1 + 8 + 2 + 128 + 4]


@pytest.mark.parametrize("name, compress", [("scene.msgpack", False), ("scene.ingp", True)])
def test_density_and_colour_have_the_closed_form_values(tmp_path, name, compress):
    write(tmp_path / name, snapshot(), compress)
    field = load_instant_ngp(tmp_path / name)
    assert field.kind == "instant-ngp"
    # the world box is the network's box mapped back, axis by axis: world x is network z, and so on
    lo = torch.tensor([(-0.5 - OFFSET[w]) / SCALE for w in range(3)])
    hi = torch.tensor([(1.5 - OFFSET[w]) / SCALE for w in range(3)])
    torch.testing.assert_close(field.aabb, torch.stack([lo, hi]))
    # network points in the occupied part of cascade 0 (x < 0.45), x below 5/6 of level 0's grid:
    # past it a cell's far corner wraps (as in tiny-cuda-nn) and the ramp below is not exact
    n = torch.rand(300, 3) * 0.9 + 0.05
    n[:, 0] = torch.rand(300) * 0.4 + 0.02
    x = world_from_network(n)
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    u = (n[:, 0] + 0.5) / 2.0  # the network input: (x - box min) / box size
    pos = u * (BASE - 1) + 0.5  # level 0's grid position, which its feature 0 interpolates exactly
    out = field.query(x, d)
    torch.testing.assert_close(out.sigma, torch.exp(0.5 * pos) * SCALE, atol=1e-4, rtol=1e-3)
    sh3 = -0.48860251190291987 * d[:, 1]  # SH index 3 is -C1 * (first direction coordinate) = world y
    expected = torch.sigmoid(torch.stack([torch.full_like(u, 0.28209479177387814), sh3, 0.125 * pos], -1))
    torch.testing.assert_close(out.rgb, expected, atol=1e-3, rtol=1e-3)


def test_the_density_grid_empties_space_as_instant_ngp_does(tmp_path):
    write(tmp_path / "scene.msgpack", snapshot())
    field = load_instant_ngp(tmp_path / "scene.msgpack")

    def empty(n):
        return field.empty_mask(world_from_network(n))

    inner = torch.rand(400, 3) * 0.9 + 0.05  # cascade 0
    assert not empty(inner[inner[:, 0] < 0.45]).any()
    assert empty(inner[inner[:, 0] > 0.55]).all()  # cells of value 0 stay empty
    outer = torch.rand(400, 3) * 1.9 - 0.45  # cascade 1 where some coordinate leaves [0, 1]
    outer = outer[((outer < 0) | (outer > 1)).any(-1)]
    assert not empty(outer[outer[:, 0] < -0.3]).any()
    assert empty(outer[outer[:, 0] > -0.2]).all()  # never seen (-1), or empty in cascade 0
    # and the teacher's own query gives no density there
    sigma = field.query(world_from_network(inner), torch.ones(400, 3) / math.sqrt(3)).sigma
    assert torch.equal(sigma[inner[:, 0] > 0.55], torch.zeros(int((inner[:, 0] > 0.55).sum())))
    assert (sigma[inner[:, 0] < 0.45] > 0).all()
    assert field.empty_mask(torch.tensor([[0.0, 7.0, 0.0]])).all()  # outside the box


def test_per_level_scale_is_recomputed_when_the_snapshot_lacks_it(tmp_path):
    doc = snapshot()
    doc["encoding"] = {k: v for k, v in doc["encoding"].items() if k != "per_level_scale"}
    doc["encoding"].update(n_levels=16, log2_hashmap_size=19, base_resolution=16)
    doc["snapshot"]["nerf"]["dataset"]["aabb_scale"] = 1  # NeRF-synthetic's
    layout = level_layout(16, 19, 16, math.exp(math.log(2048 / 16) / 15))
    grid = np.zeros((layout[-1]["offset"] + layout[-1]["size"]) * 2, dtype=np.float16)
    d1 = np.zeros((16, 32), dtype=np.float16)  # the density network now sees 16 levels x 2 features
    rest = params()[16 * 16:16 * 16 * 2 + 16 * 32 + 16 * 16 * 2]
    p = np.concatenate([d1.reshape(-1), rest, grid])
    doc["snapshot"].update(params_binary=p.tobytes(), n_params=int(p.size))
    write(tmp_path / "lego.msgpack", doc)
    field = load_instant_ngp(tmp_path / "lego.msgpack")
    assert field.config.per_level_scale == pytest.approx(1.3819128799677, rel=1e-6)  # Instant-NGP's b for lego


def test_a_snapshot_converts_to_a_hashgrid(tmp_path):
    write(tmp_path / "scene.ingp", snapshot(), compress=True)
    r = run_cli("convert", tmp_path / "scene.ingp", "--to", "hashgrid", "--stage-steps", "2", "2", "2", "--report-views", "1",
                "--output", tmp_path / "out", "--set", "log2_table=12", "max_resolution=64", "samples_per_ray=64")
    assert r.returncode == 0, r.stderr
    assert "converted instant-ngp -> hashgrid" in r.stdout


@pytest.mark.parametrize("changes, message", [
    ({"snapshot.version": 0}, "snapshot format version 0"),
    ({"encoding.otype": "Frequency"}, "position encoding is 'Frequency'"),
    ({"network.otype": "CutlassMLP"}, "parameters, but the networks"),  # 8-padding: a different count
    ({"network.activation": "Sine"}, "must use ReLU hidden layers"),
    ({"snapshot.params_type": "double"}, "params_type 'double'"),
    ({"snapshot.n_params": 5}, "parameters, but the networks"),
])
def test_unsupported_snapshots_are_clear_errors(tmp_path, changes, message):
    write(tmp_path / "bad.msgpack", snapshot(**changes))
    with pytest.raises(CheckpointError, match=message):
        load_instant_ngp(tmp_path / "bad.msgpack")


@pytest.mark.parametrize("data, message", [
    (b"\x1f\x8b\x08 broken", "compressed data is broken"),
    (msgpack.packb({"network": {}}), "has a 'snapshot' entry; found network"),
    (b"\xc1\xc1\xc1", "not msgpack data"),
])
def test_files_that_are_not_snapshots(tmp_path, data, message):
    (tmp_path / "x.msgpack").write_bytes(data)
    with pytest.raises(CheckpointError, match=message):
        load_instant_ngp(tmp_path / "x.msgpack")
