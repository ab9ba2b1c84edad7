"""TensoRF checkpoints (apchenstu/TensoRF ``.th``) as teachers.

The files here are built to the layout that TensoRF's own code writes and reads, as read in
apchenstu/TensoRF: ``models/tensorBase.py`` (``TensorBase.save`` / ``load``: the ``kwargs``,
``state_dict`` and packed ``alphaMask.*`` entries; ``normalize_coord``, ``feature2density``,
``positional_encoding``, ``MLPRender_Fea``, ``AlphaGridMask.sample_alpha``) and
``models/tensoRF.py`` (``TensorVMSplit.init_one_svd`` shapes ``(1, C, R[b], R[a])`` for planes
and ``(1, C, R[c], 1)`` for lines with ``matMode = [[0,1],[0,2],[1,2]]`` and ``vecMode = [2,1,0]``;
``compute_densityfeature`` / ``compute_appfeature``; ``TensorCP``). The planes and lines hold
linear ramps, which bilinear interpolation reproduces exactly, so every query has a value known
in closed form, and a wrong axis or a transposed plane shows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import run_cli

from radistill.errors import CheckpointError
from radistill.io.tensorf import load_tensorf

AABB = torch.tensor([[-1.0, -2.0, -1.0], [1.0, 2.0, 3.0]])
GRID = [4, 5, 6]  # Rx, Ry, Rz: different sizes, so a transposed tensor cannot pass


def ramp(n: int) -> torch.Tensor:
    """Node coordinates of an ``align_corners=True`` axis: -1 .. 1."""
    return torch.linspace(-1.0, 1.0, n)


def plane(values_of_w_h, a: int, b: int) -> torch.Tensor:
    """A one-component plane (1, 1, R[b], R[a]) with value f(w, h) at its nodes."""
    w, h = ramp(GRID[a]), ramp(GRID[b])
    return values_of_w_h(w[None, :], h[:, None]).expand(GRID[b], GRID[a])[None, None].clone()


def line(values, c: int) -> torch.Tensor:
    return values(ramp(GRID[c]))[None, None, :, None].clone()


def normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - AABB[0]) * 2 / (AABB[1] - AABB[0]) - 1


def vm_state(shading: str = "RGB", feature_c: int = 8, rng: torch.Generator | None = None) -> dict:
    one = lambda *_: torch.tensor(1.0)  # noqa: E731
    zero = lambda *_: torch.tensor(0.0)  # noqa: E731
    state = {
        # density feature = x + y * z (normalised coordinates)
        "density_plane.0": plane(lambda w, h: w + 0 * h, 0, 1), "density_line.0": line(lambda z: z * 0 + 1, 2),
        "density_plane.1": plane(lambda w, h: h + 0 * w, 0, 2), "density_line.1": line(lambda y: y, 1),
        "density_plane.2": plane(lambda w, h: 0 * w + 0 * h, 1, 2), "density_line.2": line(lambda x: 0 * x, 0),
        # appearance components: [x, y, z * 0.5 + 0.5]
        "app_plane.0": plane(lambda w, h: w + 0 * h, 0, 1), "app_line.0": line(lambda z: 0 * z + 1, 2),
        "app_plane.1": plane(lambda w, h: 0 * w + 0 * h + 1, 0, 2), "app_line.1": line(lambda y: y, 1),
        "app_plane.2": plane(lambda w, h: 0.5 * h + 0.5 + 0 * w, 1, 2), "app_line.2": line(lambda x: 0 * x + 1, 0),
    }
    del one, zero
    app_dim = 3 if shading == "RGB" else 5
    basis = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.5, -1.0]])
    state["basis_mat.weight"] = basis[:app_dim]
    if shading == "MLP_Fea":
        n_in = 2 * 2 * app_dim + 6 * 2 + 3 + app_dim  # fea_pe = view_pe = 2
        for i, (o, n) in enumerate(((feature_c, n_in), (feature_c, feature_c), (3, feature_c))):
            state[f"renderModule.mlp.{2 * i}.weight"] = torch.randn(o, n, generator=rng) * 0.5
            state[f"renderModule.mlp.{2 * i}.bias"] = torch.randn(o, generator=rng) * 0.1
    return state


def write_checkpoint(path, state: dict, shading: str = "RGB", mask: np.ndarray | None = None, **extra) -> None:
    kwargs = {"aabb": AABB.clone(), "gridSize": list(GRID), "density_n_comp": [1, 1, 1], "appearance_n_comp": [1, 1, 1],
              "app_dim": state["basis_mat.weight"].shape[0], "density_shift": 0.0, "alphaMask_thres": 0.001,
              "distance_scale": 25.0, "rayMarch_weight_thres": 1e-4, "fea2denseAct": "softplus", "near_far": [2.0, 6.0],
              "step_ratio": 0.5, "shadingMode": shading, "pos_pe": 6, "view_pe": 2, "fea_pe": 2, "featureC": 8, **extra}
    ckpt = {"kwargs": kwargs, "state_dict": state}
    if mask is not None:  # as TensorBase.save writes it: the 5-d shape, packed bits, the mask's aabb
        ckpt["alphaMask.shape"] = (1, 1, *mask.shape)
        ckpt["alphaMask.mask"] = np.packbits(mask.reshape(-1))
        ckpt["alphaMask.aabb"] = AABB.clone()
    torch.save(ckpt, path)


def inside_points(n: int) -> torch.Tensor:
    return AABB[0] + (AABB[1] - AABB[0]) * (0.05 + 0.9 * torch.rand(n, 3))


def test_vm_density_and_colour_have_the_closed_form_values(tmp_path):
    write_checkpoint(tmp_path / "vm.th", vm_state("RGB"))
    field = load_tensorf(tmp_path / "vm.th")
    assert field.kind == "tensorf-th" and field.config.model == "TensorVMSplit"
    x = inside_points(200)
    xn = normalized(x)
    feature = xn[:, 0] + xn[:, 1] * xn[:, 2]
    torch.testing.assert_close(field.density(x), 25.0 * torch.nn.functional.softplus(feature), atol=1e-5, rtol=1e-5)
    out = field.query(x, torch.nn.functional.normalize(torch.randn(200, 3), dim=-1))
    expected_rgb = torch.stack([xn[:, 0], xn[:, 1], 0.5 * xn[:, 2] + 0.5], -1)  # RGB shading: the features
    torch.testing.assert_close(out.rgb, expected_rgb, atol=1e-5, rtol=1e-5)
    # outside the aabb nothing is there
    far = torch.tensor([[0.0, 0.0, 3.5], [1.2, 0.0, 0.0]])
    assert torch.equal(field.query(far, torch.ones(2, 3) / math.sqrt(3)).sigma, torch.zeros(2))


def test_mlp_fea_shading_follows_tensorf(tmp_path):
    rng = torch.Generator().manual_seed(0)
    state = vm_state("MLP_Fea", rng=rng)
    write_checkpoint(tmp_path / "mlp.th", state, shading="MLP_Fea")
    field = load_tensorf(tmp_path / "mlp.th")
    x = inside_points(64)
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=rng), dim=-1)
    xn = normalized(x)
    components = torch.stack([xn[:, 0], xn[:, 1], 0.5 * xn[:, 2] + 0.5], -1)
    feat = components @ state["basis_mat.weight"].T  # [N, 5]

    def encode(p, freqs):  # sin then cos of p_d * 2^k, d-major (TensoRF's positional_encoding)
        z = torch.cat([p[:, i:i + 1] * 2.0 ** torch.arange(freqs) for i in range(p.shape[1])], 1)
        return torch.cat([torch.sin(z), torch.cos(z)], 1)

    h = torch.cat([feat, d, encode(feat, 2), encode(d, 2)], 1)
    for i in (0, 2, 4):
        h = h @ state[f"renderModule.mlp.{i}.weight"].T + state[f"renderModule.mlp.{i}.bias"]
        h = torch.relu(h) if i < 4 else torch.sigmoid(h)
    torch.testing.assert_close(field.query(x, d).rgb, h, atol=1e-5, rtol=1e-4)


def test_cp_density_is_the_product_of_its_lines(tmp_path):
    state = {"density_line.0": line(lambda z: z + 2, 2), "density_line.1": line(lambda y: 0 * y + 1, 1),
             "density_line.2": line(lambda x: x, 0), "app_line.0": line(lambda z: 0 * z + 1, 2),
             "app_line.1": line(lambda y: y, 1), "app_line.2": line(lambda x: 0 * x + 0.5, 0),
             "basis_mat.weight": torch.tensor([[1.0], [2.0], [-1.0]])}
    write_checkpoint(tmp_path / "cp.th", state)
    field = load_tensorf(tmp_path / "cp.th")
    assert field.config.model == "TensorCP"
    x = inside_points(100)
    xn = normalized(x)
    torch.testing.assert_close(field.density(x), 25.0 * torch.nn.functional.softplus((xn[:, 2] + 2) * xn[:, 0]),
                               atol=1e-5, rtol=1e-5)
    product = 0.5 * xn[:, 1]
    torch.testing.assert_close(field.query(x, torch.ones(100, 3) / math.sqrt(3)).rgb,
                               product[:, None] * torch.tensor([1.0, 2.0, -1.0]), atol=1e-5, rtol=1e-5)


def test_the_alpha_mask_empties_space(tmp_path):
    # the mask volume is (Z, Y, X); keep only the half with normalised x < 0 (cells well away from it)
    z, y, x = 8, 8, 8
    mask = np.zeros((z, y, x), dtype=bool)
    mask[:, :, : x // 2] = True
    write_checkpoint(tmp_path / "masked.th", vm_state("RGB"), mask=mask)
    field = load_tensorf(tmp_path / "masked.th")
    pts = inside_points(400)
    xn = normalized(pts)[:, 0]
    sigma = field.query(pts, torch.ones(400, 3) / math.sqrt(3)).sigma
    kept, dropped = xn < -0.2, xn > 0.2
    assert kept.sum() > 50 and dropped.sum() > 50
    assert torch.equal(sigma[dropped], torch.zeros(int(dropped.sum())))
    torch.testing.assert_close(sigma[kept], field.density(pts[kept]))
    assert field.volume_step > 2


def test_a_tensorf_checkpoint_converts_to_a_hashgrid(tmp_path):
    write_checkpoint(tmp_path / "vm.th", vm_state("RGB"))
    r = run_cli("convert", tmp_path / "vm.th", "--to", "hashgrid", "--stage-steps", "2", "2", "2",
                "--output", tmp_path / "out", "--set", "log2_table=12", "max_resolution=64")
    assert r.returncode == 0, r.stderr
    assert "converted tensorf-th -> hashgrid" in r.stdout
    assert (tmp_path / "out" / "hashgrid.safetensors").exists()


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("make, message", [
    (lambda p: torch.save({"kwargs": {}, "state_dict": {"w": Evil()}}, p), "needs the Python object"),
    (lambda p: torch.save({"model": torch.zeros(3)}, p), "is a dict with 'kwargs' and 'state_dict'; found model"),
    (lambda p: write_checkpoint(p, vm_state("RGB"), shading="MLP_PE"), "shading mode 'MLP_PE' is not supported"),
    (lambda p: write_checkpoint(p, {k: v for k, v in vm_state("RGB").items() if k != "app_line.1"}), "'app_line.1'"),
    (lambda p: p.write_bytes(b"not a checkpoint"), "not readable as a TensoRF checkpoint"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, make, message, capsys):
    path = tmp_path / "bad.th"
    make(path)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_tensorf(path)
    assert "this must never run" not in capsys.readouterr().out


def test_cli_refuses_a_pickle_that_runs_code(tmp_path):
    torch.save({"kwargs": Evil(), "state_dict": {}}, tmp_path / "evil.th")
    r = run_cli("convert", tmp_path / "evil.th", "--to", "hashgrid")
    assert r.returncode == 2 and "needs the Python object" in r.stderr
    assert "this must never run" not in r.stdout and "Traceback" not in r.stderr
