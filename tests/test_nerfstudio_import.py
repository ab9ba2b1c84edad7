"""nerfstudio run folders (splatfacto) as teachers.

The runs here are written to the layout nerfstudio 1.1.5 writes, as read in its sources:
``configs/experiment_config.py`` (``config.yml`` is ``yaml.dump`` of the dataclasses, with
``!!python/object`` / ``python/name`` / ``python/object/apply`` tags), ``engine/trainer.py``
(``nerfstudio_models/step-%09d.ckpt``: ``step``, ``pipeline``, ``optimizers``, ``schedulers``,
``scalers``; ``dataparser_transforms.json``), ``data/dataparsers/base_dataparser.py`` and
``nerfstudio_dataparser.py`` (a world point sits at ``scale * (T @ [p; 1])``),
``engine/schedulers.py`` (numpy learning rates in the optimiser state) and
``models/splatfacto.py`` (``_model.gauss_params.{means, scales, quats, features_dc,
features_rest, opacities}``). The real nerfstudio is not installed here; its end-to-end test
is still to come (issue 7).

The import is checked by rendering: the Gaussians in nerfstudio's frame seen by a camera in
that frame must give the image that the imported Gaussians give seen by the same camera in the
world frame, which holds only if centres, sizes, orientations and the SH colour all moved right.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli

from radistill.cameras import orbit_poses, pinhole_cameras
from radistill.errors import CheckpointError
from radistill.fields.gaussians import GaussiansField
from radistill.io.nerfstudio import load_nerfstudio_run, read_config

CONFIG = """!!python/object:nerfstudio.engine.trainer.TrainerConfig
_target: !!python/name:nerfstudio.engine.trainer.Trainer ''
data: !!python/object/apply:pathlib.PosixPath
- data
- scene
experiment_name: scene
method_name: {method}
machine: !!python/object:nerfstudio.configs.base_config.MachineConfig
  device_type: cuda
  num_devices: 1
pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig
  _target: !!python/name:nerfstudio.pipelines.base_pipeline.VanillaPipeline ''
  model: !!python/object:nerfstudio.models.splatfacto.SplatfactoModelConfig
    _target: !!python/name:nerfstudio.models.splatfacto.SplatfactoModel ''
    sh_degree: 3
    background_color: random
    rasterize_mode: classic
vis: viewer
hook: !!python/object/apply:os.system
- echo this must never run
loggers: !!python/tuple
- tensorboard
"""


def rotation_from_quaternion(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = torch.nn.functional.normalize(q, dim=0)
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


ROTATION = rotation_from_quaternion(torch.tensor([0.8, 0.3, -0.4, 0.35]))
TRANSLATION = torch.tensor([0.2, -0.5, 0.3])
SCALE = 0.37


def splats_in_nerfstudio_frame(n: int = 60) -> dict[str, torch.Tensor]:
    """Gaussians around the world origin, written in nerfstudio's frame as splatfacto stores them."""
    g = torch.Generator().manual_seed(0)
    world = torch.randn(n, 3, generator=g) * 0.4
    return {
        "means": SCALE * (world @ ROTATION.T + TRANSLATION),
        "scales": torch.log(torch.rand(n, 3, generator=g) * 0.08 + 0.03) + math.log(SCALE),
        "quats": torch.randn(n, 4, generator=g) * 2.5,  # unnormalised, as splatfacto keeps them
        "features_dc": torch.randn(n, 3, generator=g) * 0.8,
        "features_rest": torch.randn(n, 15, 3, generator=g) * 0.3,
        "opacities": torch.randn(n, 1, generator=g) + 1.0,
    }


def write_run(folder, method="splatfacto", params=None, transforms=True):
    (folder / "nerfstudio_models").mkdir(parents=True)
    (folder / "config.yml").write_text(CONFIG.format(method=method))
    if transforms:
        transform = torch.cat([ROTATION, TRANSLATION[:, None]], 1)
        (folder / "dataparser_transforms.json").write_text(json.dumps({"transform": transform.tolist(), "scale": SCALE}))
    params = splats_in_nerfstudio_frame() if params is None else params
    for step, p in ((500, {k: torch.zeros_like(v) for k, v in params.items()}), (2000, params)):
        state = {f"_model.gauss_params.{k}": v for k, v in p.items()}
        optimizers = {"means": {"state": {}, "param_groups": [{"lr": np.float64(1.6e-4), "params": [0]}]}}
        torch.save({"step": step, "pipeline": state, "optimizers": optimizers,
                    "schedulers": {"means": {"_last_lr": [np.float64(1e-4)]}}, "scalers": {}},
                   folder / "nerfstudio_models" / f"step-{step:09d}.ckpt")
    return params


def test_the_config_is_read_without_running_or_importing_anything(tmp_path, capfd):
    write_run(tmp_path / "run")
    config = read_config(tmp_path / "run" / "config.yml")
    assert config["method_name"] == "splatfacto" and config["pipeline"]["model"]["sh_degree"] == 3
    assert config["data"] == "data/scene" and config["loggers"] == ["tensorboard"]
    assert config["hook"] == "echo this must never run"  # the tag's argument, not a call
    assert "this must never run" not in capfd.readouterr().out


def test_splatfacto_gaussians_render_the_same_in_the_world_frame(tmp_path):
    ns = write_run(tmp_path / "run")
    world = load_nerfstudio_run(tmp_path / "run")  # the latest checkpoint (step 2000), in the world frame
    assert isinstance(world, GaussiansField) and len(world) == 60 and world.config.sh_degree == 3
    n = ns["means"].shape[0]
    in_ns = GaussiansField.from_params(ns["means"], torch.nn.functional.normalize(ns["quats"], dim=-1), ns["scales"],
                                       ns["opacities"].reshape(n),
                                       torch.cat([ns["features_dc"][:, None], ns["features_rest"]], 1))
    c2w_world = orbit_poses(3, 2.5, 25.0)
    c2w_ns = c2w_world.clone()
    c2w_ns[:, :3, :3] = ROTATION @ c2w_world[:, :3, :3]
    c2w_ns[:, :3, 3] = SCALE * (c2w_world[:, :3, 3] @ ROTATION.T + TRANSLATION)
    bg = torch.tensor([0.1, 0.2, 0.3])
    for i in range(3):
        expected = in_ns.render_image(pinhole_cameras(c2w_ns, 64), i, bg)["rgb"]
        got = world.render_image(pinhole_cameras(c2w_world, 64), i, bg)["rgb"]
        assert (expected - bg).abs().amax(-1).gt(0.05).float().mean() > 0.1  # the splats cover the view
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("method", ["splatfacto", "nerfacto"])
def test_a_nerfstudio_run_converts_to_a_hashgrid(tmp_path, method):
    if method == "splatfacto":
        write_run(tmp_path / "run")
    else:
        write_nerfacto_run(tmp_path / "run", nerfacto_state(), density=1000.0)  # opaque: rays stop early
    r = run_cli("convert", tmp_path / "run", "--to", "hashgrid", "--stage-steps", "2", "2", "2",
                "--output", tmp_path / "out", "--set", "log2_table=12", "max_resolution=64", "samples_per_ray=64")
    assert r.returncode == 0, r.stderr
    assert f"converted {'gaussians' if method == 'splatfacto' else 'nerfacto'} -> hashgrid" in r.stdout


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "not a nerfstudio run"),
    (lambda p: write_run(p, method="instant-ngp"), "a nerfstudio 'instant-ngp' run; supported methods: splatfacto, nerfacto"),
    (lambda p: write_run(p, transforms=False), "dataparser_transforms.json is missing"),
    (lambda p: write_run(p, params={k: v for k, v in splats_in_nerfstudio_frame().items() if k != "quats"}),
     "missing quats"),
])
def test_runs_that_cannot_be_read_are_clear_errors(tmp_path, make, message):
    make(tmp_path / "run")
    with pytest.raises(CheckpointError, match=message):
        load_nerfstudio_run(tmp_path / "run")


def test_cli_names_an_unsupported_method(tmp_path):
    write_run(tmp_path / "run", method="tensorf")
    r = run_cli("convert", tmp_path / "run", "--to", "hashgrid")
    assert r.returncode == 2 and "supported methods: splatfacto, nerfacto" in r.stderr and "Traceback" not in r.stderr


NERFACTO_MODEL = """  model: !!python/object:nerfstudio.models.nerfacto.NerfactoModelConfig
    _target: !!python/name:nerfstudio.models.nerfacto.NerfactoModel ''
    num_levels: 1
    base_res: 4
    max_res: 4
    log2_hashmap_size: 12
    features_per_level: 2
    average_init_density: {density}
    use_average_appearance_embedding: true
    implementation: {implementation}
    hidden_dim: 16
    hidden_dim_color: 16
"""


def nerfstudio_hash(corner: tuple[int, int, int], size: int) -> int:
    """field_components/encodings.py hash_fn: 64-bit products, xor, modulo the table size."""
    x, y, z = corner[0] * 1, corner[1] * 2654435761, corner[2] * 805459861
    return (x ^ y ^ z) % size


def nerfacto_state() -> dict[str, torch.Tensor]:
    """One level at scale 4: the features of every cell corner are (i, j + k / 2) of its indices
    (ramps that interpolation reproduces, so a wrong corner shows), and MLPs that expose them:
    density 0.01 exp(q_x) in nerfstudio's units, colour
    sigmoid([SH_1, 4 q_x, 4 q_y + 2 q_z + mean appearance 0.3])."""
    size = 1 << 12
    table = torch.zeros(size, 2)
    rows = {}
    for i in range(5):
        for j in range(5):
            for k in range(5):
                rows[(i, j, k)] = nerfstudio_hash((i, j, k), size)
                table[rows[(i, j, k)]] = torch.tensor([float(i), j + 0.5 * k])
    assert len(set(rows.values())) == 125  # no collisions among the corners used
    b0, b1 = torch.zeros(8, 2), torch.zeros(16, 8)
    b0[0, 0], b0[1, 1] = 1.0, 1.0
    b1[0, 0], b1[1, 0], b1[2, 1] = 0.25, 1.0, 1.0
    h0, h1, h2 = torch.zeros(8, 63), torch.eye(8), torch.eye(8)[:3]
    h0[0, 1], h0[1, 16], h0[2, 17], h0[2, 31] = 1.0, 1.0, 1.0, 1.0  # SH 1; geometry 0; geometry 1 + appearance 0
    appearance = torch.zeros(5, 32)
    appearance[:, 0] = torch.tensor([0.1, 0.5, 0.3, 0.2, 0.4])
    state = {"_model.field.mlp_base.model.0.hash_table": table,
             "_model.field.embedding_appearance.embedding.weight": appearance,
             "_model.proposal_networks.0.encoding.hash_table": torch.zeros(8, 2)}
    for name, layers in (("mlp_base.model.1", (b0, b1)), ("mlp_head", (h0, h1, h2))):
        for i, w in enumerate(layers):
            state[f"_model.field.{name}.layers.{i}.weight"] = w
            state[f"_model.field.{name}.layers.{i}.bias"] = torch.zeros(w.shape[0])
    return state


def write_nerfacto_run(folder, state, density: float = 0.01, implementation: str = "torch") -> None:
    (folder / "nerfstudio_models").mkdir(parents=True)
    config = CONFIG.format(method="nerfacto")
    start = config.index("  model:")
    end = config.index("vis: viewer")
    (folder / "config.yml").write_text(config[:start] + NERFACTO_MODEL.format(density=density, implementation=implementation) + config[end:])
    transform = torch.cat([ROTATION, TRANSLATION[:, None]], 1)
    (folder / "dataparser_transforms.json").write_text(json.dumps({"transform": transform.tolist(), "scale": SCALE}))
    torch.save({"step": 100, "pipeline": state, "optimizers": {}, "schedulers": {}, "scalers": {}},
               folder / "nerfstudio_models" / "step-000000100.ckpt")


def test_nerfacto_density_and_colour_have_the_closed_form_values(tmp_path):
    write_nerfacto_run(tmp_path / "run", nerfacto_state())
    field = load_nerfstudio_run(tmp_path / "run")
    assert field.kind == "nerfacto"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 3, generator=g) * 2.0  # inside nerfstudio's unit box and far outside it
    d = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1)
    p = SCALE * (x @ ROTATION.T + TRANSLATION)
    m = p.abs().amax(-1, keepdim=True)
    q = (torch.where(m < 1, p, (2 - 1 / m) * p / m) + 2) / 4  # the L-infinity contraction, then to [0, 1]
    assert (m < 1).any() and (m > 1.5).any()
    out = field.query(x, d)
    torch.testing.assert_close(out.sigma, 0.01 * torch.exp(q[:, 0]) * SCALE, atol=1e-6, rtol=1e-5)
    sh1 = 0.4886025119029199 * ((d @ ROTATION.T)[:, 1] + 1) / 2  # nerfstudio's SH of (d + 1) / 2, no sign
    expected = torch.sigmoid(torch.stack([sh1, 4 * q[:, 0], 4 * q[:, 1] + 2 * q[:, 2] + 0.3], -1))
    torch.testing.assert_close(out.rgb, expected, atol=1e-5, rtol=1e-5)


def tcnn_nerfacto_state() -> dict[str, torch.Tensor]:
    """The tiny-cuda-nn build (tiny-cuda-nn's network_with_input_encoding.h and fully_fused_mlp.cu):
    the base network's bias-free row-major matrices (inputs padded to 16) then the hash grid, in
    one fp16 vector; the colour network's in another. One dense level of 4^3 corners at scale 3
    holds (i, j + k / 2), so density 0.01 exp(pos_x / 4) and colour
    sigmoid([2 SH_0 + SH_3, pos_x, pos_y + pos_z / 2 + 0.3]) with ``pos = 3 q + 0.5``."""
    grid = torch.zeros(64, 2)
    for i in range(4):
        for j in range(4):
            for k in range(4):
                grid[i + 4 * j + 16 * k] = torch.tensor([float(i), j + 0.5 * k])
    b0, b1 = torch.zeros(16, 16), torch.zeros(16, 16)
    b0[0, 0], b0[1, 1] = 1.0, 1.0
    b1[0, 0], b1[1, 0], b1[2, 1] = 0.25, 1.0, 1.0
    h0, h1, h2 = torch.zeros(16, 64), torch.eye(16), torch.eye(16)
    h0[0, 0], h0[0, 3], h0[1, 16], h0[2, 17], h0[2, 31] = 2.0, 1.0, 1.0, 1.0, 1.0
    appearance = torch.zeros(5, 32)
    appearance[:, 0] = torch.tensor([0.1, 0.5, 0.3, 0.2, 0.4])
    flat = lambda *ms: torch.cat([m.reshape(-1) for m in ms]).half()  # noqa: E731
    return {"_model.field.mlp_base.model.params": flat(b0, b1, grid),
            "_model.field.mlp_head.tcnn_encoding.params": flat(h0, h1, h2),
            "_model.field.embedding_appearance.embedding.weight": appearance}


def test_nerfacto_of_the_tiny_cuda_nn_build_has_the_closed_form_values(tmp_path):
    write_nerfacto_run(tmp_path / "run", tcnn_nerfacto_state(), implementation="tcnn")
    field = load_nerfstudio_run(tmp_path / "run")
    assert field.config.encoding == "tcnn"
    g = torch.Generator().manual_seed(2)
    p = (torch.rand(200, 3, generator=g) * 2 - 1) * 0.95  # inside nerfstudio's unit box (no contraction)
    x = (p / SCALE - TRANSLATION) @ ROTATION  # the world points that land there
    d = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1)
    pos = 3 * (p + 2) / 4 + 0.5
    out = field.query(x, d)
    torch.testing.assert_close(out.sigma, 0.01 * torch.exp(pos[:, 0] / 4) * SCALE, atol=1e-6, rtol=1e-4)
    sh3 = -0.4886025119029199 * (d @ ROTATION.T)[:, 0]  # tiny-cuda-nn's SH: signed, of the direction itself
    expected = torch.sigmoid(torch.stack([2 * 0.28209479177387814 + sh3, pos[:, 0], pos[:, 1] + pos[:, 2] / 2 + 0.3], -1))
    torch.testing.assert_close(out.rgb, expected, atol=2e-3, rtol=1e-3)


def test_a_tiny_cuda_nn_vector_of_another_size_is_named(tmp_path):
    state = tcnn_nerfacto_state()
    state["_model.field.mlp_base.model.params"] = state["_model.field.mlp_base.model.params"][:-2]
    write_nerfacto_run(tmp_path / "run", state, implementation="tcnn")
    with pytest.raises(CheckpointError, match="a layout this reader does not know"):
        load_nerfstudio_run(tmp_path / "run")


def test_gaussians_go_to_nerfstudio_frame_and_back_unchanged():
    """World -> nerfstudio's frame (what the plugin writes for splatfacto) inverts the importer's move."""
    from radistill.cameras import Similarity
    from radistill.io.nerfstudio import transform_gaussians

    ns = splats_in_nerfstudio_frame()
    n = ns["means"].shape[0]
    params = {"means": ns["means"], "quats": torch.nn.functional.normalize(ns["quats"], dim=-1), "log_scales": ns["scales"],
              "logit_opacities": ns["opacities"].reshape(n), "sh": torch.cat([ns["features_dc"][:, None], ns["features_rest"]], 1)}
    frame = Similarity(ROTATION.double(), TRANSLATION.double(), SCALE)
    world = transform_gaussians(params, frame.inverse())
    back = transform_gaussians(world, frame)
    assert not torch.allclose(world["means"], params["means"], atol=1e-2)  # the frames really differ
    for key in ("means", "log_scales", "logit_opacities", "sh"):
        torch.testing.assert_close(back[key], params[key], atol=2e-5, rtol=1e-5)
    dots = (back["quats"] * params["quats"]).sum(-1).abs()  # q and -q are one rotation
    torch.testing.assert_close(dots, torch.ones(n), atol=1e-5, rtol=0)


@pytest.mark.parametrize("degree", [0, 3])
def test_splatfacto_state_is_read_back_by_the_importer(tmp_path, degree):
    """The tensors the plugin writes for splatfacto are what a splatfacto run holds: the importer
    reads them back exactly (with sh_degree 0, splatfacto keeps the colour's logit)."""
    from radistill.cameras import Similarity
    from radistill.io.nerfstudio import splatfacto_state, transform_gaussians

    ns = splats_in_nerfstudio_frame()
    n = ns["means"].shape[0]
    sh = torch.cat([ns["features_dc"][:, None], ns["features_rest"]], 1)[:, :(degree + 1) ** 2] * 0.5
    params = {"means": ns["means"], "quats": torch.nn.functional.normalize(ns["quats"], dim=-1), "log_scales": ns["scales"],
              "logit_opacities": ns["opacities"].reshape(n), "sh": sh}
    state = splatfacto_state(params)
    assert state["_model.gauss_params.features_rest"].shape == (n, (degree + 1) ** 2 - 1, 3)
    assert state["_model.gauss_params.opacities"].shape == (n, 1)
    write_run(tmp_path / "run", params={k[len("_model.gauss_params."):]: v for k, v in state.items()})
    (tmp_path / "run" / "config.yml").write_text(CONFIG.format(method="splatfacto").replace("sh_degree: 3", f"sh_degree: {degree}"))
    world = load_nerfstudio_run(tmp_path / "run")
    back = transform_gaussians({"means": world.means, "quats": world.quats, "log_scales": world.log_scales,
                                "logit_opacities": world.logit_opacities, "sh": world.sh},
                               Similarity(ROTATION.double(), TRANSLATION.double(), SCALE))
    torch.testing.assert_close(back["means"], params["means"], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(back["sh"], params["sh"], atol=2e-5, rtol=1e-4)


def test_nerfacto_renders_the_same_with_its_occupancy_grid(tmp_path):
    """The grid only skips space where nothing is visible: renders match marching every sample."""
    from radistill.fields.base import render_volumetric

    state = nerfacto_state()
    state["_model.field.mlp_base.model.1.layers.1.weight"][0, 0] = 10.0  # log-density 40 q_x: dense at q_x > 0.5 only
    write_nerfacto_run(tmp_path / "run", state, density=4 * math.exp(-20))
    field = load_nerfstudio_run(tmp_path / "run")
    grid = field.occupancy()
    assert 0.2 < grid.fraction_occupied < 0.8
    rays = pinhole_cameras(orbit_poses(2, 9.0, 25.0), 24).image_rays(0)
    bg = torch.tensor([0.2, 0.4, 0.6])
    full = render_volumetric(field, rays, field.config.volume_step, bg)
    skipped = field.render(rays, bg)
    assert skipped.n_samples < full.n_samples
    assert (full.opacity > 0.05).float().mean() > 0.1  # the view sees the field
    # what is skipped is the fog below the threshold: on this soft ramp (a worst case; surfaces are
    # sharp) it stays under half a percent of the colour
    torch.testing.assert_close(skipped.rgb, full.rgb, atol=5e-3, rtol=0)
    # a teacher reports the skipped space empty
    x = grid.cell_centers()[~grid.occupied][:100]
    assert field.empty_mask(x).all()


# ---------------------------------------------------------------- the run's cameras

def capture_transforms(n: int = 5) -> dict:
    """A nerfstudio capture's transforms.json: shared intrinsics, poses looking at the origin."""
    c2w = orbit_poses(n, 3.0, 20.0)
    return {"fl_x": 60.0, "fl_y": 58.0, "cx": 33.0, "cy": 23.5, "w": 64, "h": 48,
            "frames": [{"file_path": f"images/frame_{i:05d}.png", "transform_matrix": c2w[i].tolist()} for i in range(n)]}


def test_a_run_teaches_from_the_capture_its_config_names(tmp_path):
    """The data set is named relative to where ns-train ran (the folder holding outputs/), and
    nerfstudio's downscale_factor scales the intrinsics."""
    from radistill.cameras import LikeCamerasSampler
    from radistill.distill.teachers import FieldTeacher

    run = tmp_path / "outputs" / "scene" / "splatfacto" / "run"
    write_run(run)
    config = (run / "config.yml").read_text()
    (run / "config.yml").write_text(config.replace(
        "pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig\n",
        "pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig\n"
        "  datamanager: !!python/object:nerfstudio.data.datamanagers.base_datamanager.VanillaDataManagerConfig\n"
        "    data: null\n"
        "    dataparser: !!python/object:nerfstudio.data.dataparsers.nerfstudio_dataparser.NerfstudioDataParserConfig\n"
        "      data: !!python/object/apply:pathlib.PosixPath\n      - data\n      - scene\n"
        "      downscale_factor: 2\n"))
    meta = capture_transforms()
    (tmp_path / "data" / "scene").mkdir(parents=True)
    (tmp_path / "data" / "scene" / "transforms.json").write_text(json.dumps(meta))
    teacher = FieldTeacher.from_checkpoint(run)
    cams = teacher.cameras
    assert type(teacher.sampler) is LikeCamerasSampler
    torch.testing.assert_close(cams.c2w, torch.tensor([f["transform_matrix"] for f in meta["frames"]]))
    assert (cams.width, cams.height) == (32, 24)
    torch.testing.assert_close(torch.stack([cams.fx, cams.fy, cams.cx, cams.cy]),
                               torch.tensor([30.0, 29.0, 16.5, 11.75])[:, None].expand(4, 5))
    # sampled poses keep the capture's distance to the point it looks at
    poses = teacher.sample_poses(64, torch.Generator().manual_seed(0))
    assert abs(float(poses[:, :3, 3].norm(dim=-1).mean()) - 3.0) < 0.1


def test_a_run_trained_on_blender_data_teaches_from_its_training_cameras(tmp_path, shared_data):
    from radistill.distill.teachers import FieldTeacher

    lego = shared_data / "nerf_synthetic" / "lego"
    write_run(tmp_path / "run")
    config = (tmp_path / "run" / "config.yml").read_text()
    (tmp_path / "run" / "config.yml").write_text(config.replace("- data\n- scene\n", "".join(
        f"- {part}\n" for part in lego.resolve().parts)))
    meta = json.loads((lego / "transforms_train.json").read_text())
    cams = FieldTeacher.from_checkpoint(tmp_path / "run").cameras
    assert len(cams) == 100 and (cams.width, cams.height) == (800, 800)
    torch.testing.assert_close(cams.c2w[7], torch.tensor(meta["frames"][7]["transform_matrix"]))
    assert float(cams.fx[0]) == pytest.approx(400 / math.tan(meta["camera_angle_x"] / 2))


def test_a_run_whose_data_set_is_gone_says_so_and_samples_around_its_box(tmp_path):
    from radistill.distill.teachers import FieldTeacher, SphereLikeSampler

    write_run(tmp_path / "run")
    with pytest.warns(UserWarning, match="the data set data/scene that config.yml names is not here"):
        teacher = FieldTeacher.from_checkpoint(tmp_path / "run")
    assert isinstance(teacher.sampler, SphereLikeSampler)
