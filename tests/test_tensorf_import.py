"""TensoRF checkpoints (apchenstu/TensoRF ``.th``) as teachers.

The files here are built to the layout that TensoRF's own code writes and reads, as read in
apchenstu/TensoRF: ``models/tensorBase.py`` (``TensorBase.save`` / ``load``: the ``kwargs``,
``state_dict`` and packed ``alphaMask.*`` entries; ``normalize_coord``, ``feature2density``,
``positional_encoding``, ``MLPRender_Fea``, ``AlphaGridMask.sample_alpha``) and
``models/tensoRF.py`` (``TensorVMSplit.init_one_svd`` shapes ``(1, C, R[b], R[a])`` for planes
and ``(1, C, R[c], 1)`` for lines with ``matMode = [[0,1],[0,2],[1,2]]`` and ``vecMode = [2,1,0]``;
``compute_densityfeature`` / ``compute_appfeature``; ``TensorCP``). The planes and lines hold
bilinear and linear functions, which interpolation reproduces exactly, so every query has a
value known in closed form, and a wrong axis, a swapped plane or a transposed one shows.
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
GRID = [4, 5, 6]  # Rx, Ry, Rz
MASK_AABB = torch.tensor([[-0.5, -2.0, -1.0], [1.5, 2.0, 3.0]])  # the mask's own box, shifted along x


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


# Each plane is a different bilinear function of both of its coordinates and each line a
# different linear one: bilinear interpolation reproduces them exactly, and swapping two planes,
# two axes of a plane or two lines changes the values.
PLANES = (lambda w, h: w + 0.5 * h, lambda w, h: h - 0.25 * w + 0.2 * w * h, lambda w, h: 0.3 * w - h + 0.1)
LINES = (lambda z: 0.5 * z + 1.0, lambda y: y - 0.3, lambda x: 0.2 * x + 0.4)
APP_PLANES = (lambda w, h: 0.5 * w - 0.2 * h, lambda w, h: 0.1 + 0.3 * h + 0.1 * w, lambda w, h: w * h)
APP_LINES = (lambda z: 1.0 - 0.5 * z, lambda y: 0.4 * y + 0.2, lambda x: 0.6 - x)
MAT_MODE, VEC_MODE = ((0, 1), (0, 2), (1, 2)), (2, 1, 0)


def components(xn: torch.Tensor, planes, lines) -> list[torch.Tensor]:
    """plane_i(x[a], x[b]) * line_i(x[c]) per documented axis pairs: (x, y) with z, (x, z) with y, (y, z) with x."""
    return [planes[i](xn[:, MAT_MODE[i][0]], xn[:, MAT_MODE[i][1]]) * lines[i](xn[:, VEC_MODE[i]]) for i in range(3)]


def vm_state(shading: str = "RGB", feature_c: int = 8, rng: torch.Generator | None = None) -> dict:
    state = {}
    for i in range(3):
        a, b = MAT_MODE[i]
        state[f"density_plane.{i}"] = plane(PLANES[i], a, b)
        state[f"density_line.{i}"] = line(LINES[i], VEC_MODE[i])
        state[f"app_plane.{i}"] = plane(APP_PLANES[i], a, b)
        state[f"app_line.{i}"] = line(APP_LINES[i], VEC_MODE[i])
    app_dim = {"RGB": 3, "SH": 27}.get(shading, 5)
    state["basis_mat.weight"] = torch.randn(app_dim, 3, generator=torch.Generator().manual_seed(7)) * 0.5
    if shading in ("MLP_Fea", "MLP"):
        fea_pe = 2 if shading == "MLP_Fea" else 0
        n_in = 2 * fea_pe * app_dim + 6 * 2 + 3 + app_dim  # view_pe = 2
        for i, (o, n) in enumerate(((feature_c, n_in), (feature_c, feature_c), (3, feature_c))):
            state[f"renderModule.mlp.{2 * i}.weight"] = torch.randn(o, n, generator=rng) * 0.5
            state[f"renderModule.mlp.{2 * i}.bias"] = torch.randn(o, generator=rng) * 0.1
    return state


def app_features(xn: torch.Tensor, state: dict) -> torch.Tensor:
    return torch.stack(components(xn, APP_PLANES, APP_LINES), -1) @ state["basis_mat.weight"].T


def write_checkpoint(path, state: dict, shading: str = "RGB", mask: np.ndarray | None = None, **extra) -> None:
    kwargs = {"aabb": AABB.clone(), "gridSize": list(GRID), "density_n_comp": [1, 1, 1], "appearance_n_comp": [1, 1, 1],
              "app_dim": state["basis_mat.weight"].shape[0], "density_shift": -1.0, "alphaMask_thres": 0.001,
              "distance_scale": 20.0, "rayMarch_weight_thres": 1e-4, "fea2denseAct": "softplus", "near_far": [2.0, 6.0],
              "step_ratio": 0.5, "shadingMode": shading, "pos_pe": 6, "view_pe": 2, "fea_pe": 2, "featureC": 8, **extra}
    ckpt = {"kwargs": kwargs, "state_dict": state}
    if mask is not None:  # as TensorBase.save writes it: the 5-d shape, packed bits, the mask's aabb
        ckpt["alphaMask.shape"] = (1, 1, *mask.shape)
        ckpt["alphaMask.mask"] = np.packbits(mask.reshape(-1))
        ckpt["alphaMask.aabb"] = MASK_AABB.clone()
    torch.save(ckpt, path)


def inside_points(n: int) -> torch.Tensor:
    return AABB[0] + (AABB[1] - AABB[0]) * (0.05 + 0.9 * torch.rand(n, 3))


def density_of(feature: torch.Tensor) -> torch.Tensor:
    return 20.0 * torch.nn.functional.softplus(feature - 1.0)  # distance_scale 20, density_shift -1


def test_vm_density_and_colour_have_the_closed_form_values(tmp_path):
    state = vm_state("RGB")
    write_checkpoint(tmp_path / "vm.th", state)
    field = load_tensorf(tmp_path / "vm.th")
    assert field.kind == "tensorf-th" and field.config.model == "TensorVMSplit"
    x = inside_points(200)
    xn = normalized(x)
    torch.testing.assert_close(field.density(x), density_of(sum(components(xn, PLANES, LINES))), atol=1e-5, rtol=1e-5)
    out = field.query(x, torch.nn.functional.normalize(torch.randn(200, 3), dim=-1))
    torch.testing.assert_close(out.rgb, app_features(xn, state), atol=1e-5, rtol=1e-5)  # RGB: the features
    # outside the aabb nothing is there
    far = torch.tensor([[0.0, 0.0, 3.5], [1.2, 0.0, 0.0]])
    assert torch.equal(field.query(far, torch.ones(2, 3) / math.sqrt(3)).sigma, torch.zeros(2))


def encode(p: torch.Tensor, freqs: int) -> torch.Tensor:
    """sin then cos of p_d * 2^k, d-major (TensoRF's positional_encoding)."""
    z = torch.cat([p[:, i:i + 1] * 2.0 ** torch.arange(freqs) for i in range(p.shape[1])], 1)
    return torch.cat([torch.sin(z), torch.cos(z)], 1)


@pytest.mark.parametrize("shading", ["MLP_Fea", "MLP"])
def test_mlp_shading_follows_tensorf(tmp_path, shading):
    rng = torch.Generator().manual_seed(0)
    state = vm_state(shading, rng=rng)
    write_checkpoint(tmp_path / "mlp.th", state, shading=shading)
    field = load_tensorf(tmp_path / "mlp.th")
    x = inside_points(64)
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=rng), dim=-1)
    feat = app_features(normalized(x), state)
    h = torch.cat([feat, d, encode(feat, 2), encode(d, 2)] if shading == "MLP_Fea" else [feat, d, encode(d, 2)], 1)
    for i in (0, 2, 4):
        h = h @ state[f"renderModule.mlp.{i}.weight"].T + state[f"renderModule.mlp.{i}.bias"]
        h = torch.relu(h) if i < 4 else torch.sigmoid(h)
    torch.testing.assert_close(field.query(x, d).rgb, h, atol=1e-5, rtol=1e-4)


def test_sh_shading_follows_tensorf(tmp_path):
    state = vm_state("SH")
    write_checkpoint(tmp_path / "sh.th", state, shading="SH")
    field = load_tensorf(tmp_path / "sh.th")
    x = inside_points(50)
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    dx, dy, dz = d.unbind(-1)
    basis = torch.stack([torch.full_like(dx, 0.28209479177387814), -0.4886025119029199 * dy, 0.4886025119029199 * dz,
                         -0.4886025119029199 * dx, 1.0925484305920792 * dx * dy, -1.0925484305920792 * dy * dz,
                         0.31539156525252005 * (2 * dz * dz - dx * dx - dy * dy), -1.0925484305920792 * dx * dz,
                         0.5462742152960396 * (dx * dx - dy * dy)], -1)
    coefs = app_features(normalized(x), state).view(-1, 3, 9)  # 9 coefficients per channel
    expected = torch.relu((coefs * basis[:, None, :]).sum(-1) + 0.5)
    torch.testing.assert_close(field.query(x, d).rgb, expected, atol=1e-5, rtol=1e-5)


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
    torch.testing.assert_close(field.density(x), density_of((xn[:, 2] + 2) * xn[:, 0]), atol=1e-5, rtol=1e-5)
    product = 0.5 * xn[:, 1]
    torch.testing.assert_close(field.query(x, torch.ones(100, 3) / math.sqrt(3)).rgb,
                               product[:, None] * torch.tensor([1.0, 2.0, -1.0]), atol=1e-5, rtol=1e-5)


def test_the_alpha_mask_empties_space(tmp_path):
    # the mask volume is (Z, Y, X) over its own box: keep the half with x < 0.5 in world units
    # (its box spans x in [-0.5, 1.5]; the model's spans [-1, 1], so the model's own box would put
    # the cut at x = 0)
    z, y, x = 8, 8, 8
    mask = np.zeros((z, y, x), dtype=bool)
    mask[:, :, : x // 2] = True
    write_checkpoint(tmp_path / "masked.th", vm_state("RGB"), mask=mask)
    field = load_tensorf(tmp_path / "masked.th")
    pts = inside_points(600)
    sigma = field.query(pts, torch.ones(600, 3) / math.sqrt(3)).sigma
    # kept between the mask box's start and its cut; dropped past the cut and before its start
    kept = (pts[:, 0] > -0.4) & (pts[:, 0] < 0.2)
    # (trilinear reads blend the border cells with the zero padding for one more cell outward)
    dropped = (pts[:, 0] > 0.8) | (pts[:, 0] < -0.5 - 2 / 7)
    assert kept.sum() > 50 and dropped.sum() > 50
    assert torch.equal(sigma[dropped], torch.zeros(int(dropped.sum())))
    torch.testing.assert_close(sigma[kept], field.density(pts[kept]))


def test_a_tensorf_checkpoint_converts_to_a_hashgrid(tmp_path):
    write_checkpoint(tmp_path / "vm.th", vm_state("RGB"))
    r = run_cli("convert", tmp_path / "vm.th", "--to", "hashgrid", "--stage-steps", "2", "2", "2",
                "--output", tmp_path / "out", "--set", "log2_table=12", "max_resolution=64", "samples_per_ray=64")
    assert r.returncode == 0, r.stderr
    assert "converted tensorf-th -> hashgrid" in r.stdout
    assert (tmp_path / "out" / "hashgrid.safetensors").exists()


def _ckpt_with_mask() -> dict:
    state = vm_state("RGB")
    return {"kwargs": {"aabb": AABB.clone(), "gridSize": list(GRID), "shadingMode": "RGB"}, "state_dict": state,
            "alphaMask.shape": (1, 1, 8, 8, 8), "alphaMask.aabb": AABB.clone()}


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("make, message", [
    (lambda p: torch.save({"kwargs": {}, "state_dict": {"w": Evil()}}, p), "needs the Python object"),
    (lambda p: torch.save({"model": torch.zeros(3)}, p), "is a dict with 'kwargs' and 'state_dict'; found model"),
    (lambda p: write_checkpoint(p, vm_state("RGB"), shading="MLP_PE"), "shading mode 'MLP_PE' is not supported"),
    (lambda p: write_checkpoint(p, {k: v for k, v in vm_state("RGB").items() if k != "app_line.1"}), "'app_line.1'"),
    (lambda p: p.write_bytes(b"not a checkpoint"), "not readable as a TensoRF checkpoint"),
    (lambda p: write_checkpoint(p, vm_state("MLP_Fea"), shading="MLP_Fea", fea_pe=3), "the colour MLP takes 40 inputs, but MLP_Fea with 5 features, view_pe=2 and fea_pe=3 gives 50"),
    (lambda p: write_checkpoint(p, vm_state("RGB"), shading="SH"), "SH shading needs 27 appearance features"),
    (lambda p: torch.save({**_ckpt_with_mask(), "alphaMask.mask": np.zeros(3, np.uint8)}, p), "alpha mask is incomplete"),
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
