"""nerfstudio runs (``outputs/<experiment>/<method>/<timestamp>/``) as teachers.

What such a folder holds (nerfstudio 1.1): ``config.yml`` (``yaml.dump`` of the trainer's
dataclasses, with ``!!python/object`` tags; read here into plain dicts, never by importing the
tagged classes), ``dataparser_transforms.json`` (``transform`` 3x4 and ``scale``: a world point
``p`` of the data set sits at ``scale * (T @ [p; 1])`` in nerfstudio's frame) and
``nerfstudio_models/step-*.ckpt`` (``torch.save`` of ``step``, ``pipeline`` (the model's
state dict under ``_model.``), ``optimizers``, ``schedulers``, ``scalers``; the optimiser
state holds numpy scalars, which the safe loader allows).

Supported: ``splatfacto`` (and its variants), whose ``_model.gauss_params`` (means, log
scales, wxyz quaternions, SH DC and rest, logit opacities) become a ``gaussians`` field,
moved from nerfstudio's frame back to the data set's world frame (SH coefficients rotated
with it); and ``nerfacto`` of the PyTorch hash-grid build, which becomes a teacher evaluated
with nerfacto's own arithmetic (``radistill.fields.nerfacto``) in the world frame and rendered
through its proposal networks as nerfstudio renders it (``radistill.fields.nerfacto_proposals``); and
``nerfacto`` of the tiny-cuda-nn build (its base network and hash grid in one flat vector, its
colour network in another; layout in ``radistill.io.tcnn``).

The cameras a run was trained with (``training_cameras``) are not in the run folder: they are
read from the data set its ``config.yml`` names, when that is on this machine.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from radistill.cameras import Cameras, Similarity
from radistill.datasets.blender import camera_angle, frame_image_path, frame_matrix, read_transforms
from radistill.datasets.nerfstudio import INTRINSICS, frame_intrinsic
from radistill.errors import CheckpointError, DatasetError
from radistill.fields.sh import rotate_sh
from radistill.io.foreign import load_pickled_weights

SUPPORTED = ("splatfacto", "nerfacto")
SH_C0 = 0.28209479177387814
BLENDER_SIZE = 800
"""Image side of a NeRF Blender scene whose images are gone (the NeRF-Synthetic size)."""


def is_nerfstudio_run(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.yml").is_file()


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.yml`` as plain data: tagged objects become dicts (with ``__class__``), paths
    strings, names their dotted name; nothing is imported or constructed."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def python_object(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return {"__class__": suffix, **loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.SequenceNode):
            args = loader.construct_sequence(node, deep=True)
            return "/".join(map(str, args)) if suffix.startswith("pathlib.") else (args[0] if len(args) == 1 else args)
        return loader.construct_scalar(node) or suffix

    for prefix in ("python/object:", "python/object/apply:", "python/object/new:", "python/name:", "python/module:"):
        Loader.add_multi_constructor(f"tag:yaml.org,2002:{prefix}", python_object)
    Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
    try:
        data = yaml.load(Path(path).read_text(), Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: not a readable nerfstudio config.yml ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "method_name" not in data:
        raise CheckpointError(f"{path}: a nerfstudio config.yml names its method_name; this one does not")
    return data


def latest_checkpoint(run: Path) -> Path:
    folder = run / "nerfstudio_models"
    found = sorted(folder.glob("step-*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not found:
        raise CheckpointError(f"{run}: no nerfstudio_models/step-*.ckpt in this nerfstudio run")
    return found[-1]


def dataparser_transform(run: Path) -> Similarity:
    """The move from the world frame into nerfstudio's: ``scale * (R p + t)`` (float64)."""
    path = run / "dataparser_transforms.json"
    if not path.is_file():
        raise CheckpointError(f"{run}: dataparser_transforms.json is missing (needed to put the scene back in its "
                              "world frame)")
    try:
        data = json.loads(path.read_text())
        transform = torch.tensor(data["transform"], dtype=torch.float64).reshape(3, 4)
        scale = float(data["scale"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: expected {{'transform': 3x4, 'scale': number}} ({exc})") from None
    rotation = transform[:, :3]
    if not torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-4) or scale <= 0:
        raise CheckpointError(f"{path}: the transform's 3x3 part is not a rotation, or the scale is not positive")
    return Similarity(rotation, transform[:, 3], scale)


def _quat_from_matrix(m: Tensor) -> Tensor:
    """wxyz quaternion of a rotation matrix (Shepperd's method).  # [4]"""
    trace = float(m[0, 0] + m[1, 1] + m[2, 2])
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(torch.argmax(torch.diagonal(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(float(1.0 + m[i, i] - m[j, j] - m[k, k]))
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    return torch.tensor([float(v) for v in q], dtype=torch.float64)


def _quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton products ``a * b`` of wxyz quaternions.  # [..., 4]"""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def transform_gaussians(params: dict[str, Tensor], move: Similarity) -> dict[str, Tensor]:
    """Gaussians moved by a similarity: centres, sizes, orientations, and the SH colour (a
    direction ``d`` becomes ``R d``); computed in float64. The importer moves splatfacto's
    Gaussians to the world with ``dataparser_transform(run).inverse()``, the plugin writes
    them back with ``dataparser_transform(run)``."""
    r = move.rotation.to(torch.float64)
    means = move.points(params["means"].double()).float()
    quats = _quat_multiply(_quat_from_matrix(r).expand_as(params["quats"]), params["quats"].double()).float()
    return {"means": means, "quats": quats, "log_scales": params["log_scales"] + math.log(move.scale),
            "logit_opacities": params["logit_opacities"], "sh": rotate_sh(params["sh"], r.T.float())}


def splatfacto_state(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Gaussians (nerfstudio's frame) as the tensors of a splatfacto checkpoint's pipeline:
    ``_model.gauss_params.{means, scales, quats, features_dc, features_rest, opacities}``."""
    n = params["means"].shape[0]
    sh = params["sh"].float()
    features_dc = sh[:, 0]
    if sh.shape[1] == 1:  # splatfacto with sh_degree 0 keeps the logit of the colour
        features_dc = torch.logit((SH_C0 * features_dc + 0.5).clamp(1e-6, 1 - 1e-6))
    prefix = "_model.gauss_params."
    return {prefix + "means": params["means"].float().contiguous(), prefix + "scales": params["log_scales"].float().contiguous(),
            prefix + "quats": params["quats"].float().contiguous(), prefix + "features_dc": features_dc.contiguous(),
            prefix + "features_rest": sh[:, 1:].contiguous(),
            prefix + "opacities": params["logit_opacities"].float().reshape(n, 1).contiguous()}


def _splatfacto_params(state: dict[str, Any], config: dict[str, Any], ckpt: Path) -> dict[str, Tensor]:
    prefix = "_model.gauss_params."
    needed = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")
    missing = [k for k in needed if not isinstance(state.get(prefix + k), Tensor)]
    if missing:
        found = sorted(k for k in state if k.startswith("_model."))[:8]
        raise CheckpointError(f"{ckpt}: a splatfacto checkpoint holds _model.gauss_params.{{{', '.join(needed)}}}; "
                              f"missing {', '.join(missing)} (found {', '.join(found) or 'no _model. tensors'})")
    g = {k: state[prefix + k].float() for k in needed}
    n = g["means"].shape[0]
    dc = g["features_dc"].reshape(n, 1, 3)
    model = config.get("pipeline", {}).get("model", {}) if isinstance(config.get("pipeline"), dict) else {}
    if int(model.get("sh_degree", 3)) == 0 and g["features_rest"].numel() == 0:
        dc = (torch.sigmoid(dc) - 0.5) / SH_C0  # with no SH, splatfacto keeps the logit of the colour
    sh = torch.cat([dc, g["features_rest"].reshape(n, -1, 3)], 1)
    if round(math.sqrt(sh.shape[1])) ** 2 != sh.shape[1]:
        raise CheckpointError(f"{ckpt}: {sh.shape[1]} SH coefficients per Gaussian is not a whole degree")
    return {"means": g["means"], "quats": torch.nn.functional.normalize(g["quats"], dim=-1),
            "log_scales": g["scales"], "logit_opacities": g["opacities"].reshape(n), "sh": sh}


def load_nerfstudio_run(path: str | Path):
    """A nerfstudio run folder as a radistill field (splatfacto runs become ``gaussians``).

    Raises:
        CheckpointError: not a nerfstudio run, a method not supported yet, or files that do
            not match nerfstudio's layout (the message names what was found).
    """
    from radistill.fields.gaussians import GaussiansField

    run = Path(path)
    if not is_nerfstudio_run(run):
        raise CheckpointError(f"{run}: not a nerfstudio run (a folder with config.yml and nerfstudio_models/)")
    config = read_config(run / "config.yml")
    method = str(config["method_name"])
    if not any(method == m or method.startswith(m + "-") for m in SUPPORTED):
        raise CheckpointError(f"{run}: a nerfstudio {method!r} run; supported methods: {', '.join(SUPPORTED)} "
                              "(and their variants such as splatfacto-big)")
    ckpt = latest_checkpoint(run)
    data = load_pickled_weights(ckpt, "a nerfstudio checkpoint")
    if not isinstance(data, dict) or not isinstance(data.get("pipeline"), dict):
        found = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{ckpt}: a nerfstudio checkpoint is a dict with 'pipeline'; found {found}")
    frame = dataparser_transform(run)
    if method == "nerfacto" or method.startswith("nerfacto-"):
        return _nerfacto_field(data["pipeline"], config, ckpt, frame)
    params = transform_gaussians(_splatfacto_params(data["pipeline"], config, ckpt), frame.inverse())
    return GaussiansField.from_params(params["means"], params["quats"], params["log_scales"],
                                      params["logit_opacities"], params["sh"])


def training_cameras(path: str | Path) -> Cameras | None:
    """The cameras a nerfstudio run was trained with, in the data set's world frame (the frame
    ``load_nerfstudio_run`` puts the scene in), read from the data set its ``config.yml`` names:
    ``transforms_train.json`` of a NeRF Blender folder (``blender-data``) or the ``transforms.json``
    of a nerfstudio capture (``nerfstudio-data``, scaled by its ``downscale_factor``).

    A distillation draws its poses like these cameras. When they cannot be read (the data set
    was moved, or another data parser made the run), a warning says why and None is returned:
    the poses are then drawn all around the scene's box.
    """
    run = Path(path)
    config = read_config(run / "config.yml")
    datamanager = (config.get("pipeline") or {}).get("datamanager") or {}
    parser = data_parser(config)
    named = parser.get("data") or datamanager.get("data") or config.get("data")
    if not named:
        warnings.warn(f"{run}: config.yml names no data set; poses are drawn all around the scene's box", stacklevel=2)
        return None
    data = _find_data(Path(str(named)), run)
    if data is None:
        warnings.warn(f"{run}: the data set {named} that config.yml names is not here; poses are drawn all around "
                      "the scene's box instead of like the run's cameras", stacklevel=2)
        return None
    try:
        if data.is_dir() and (data / "transforms_train.json").is_file():
            return _blender_cameras(data)
        transforms = data if data.is_file() else data / "transforms.json"
        if transforms.is_file():
            return _capture_cameras(transforms, parser.get("downscale_factor"))
    except DatasetError as exc:
        warnings.warn(f"{run}: cannot read the run's cameras ({exc}); poses are drawn all around the scene's box",
                      stacklevel=2)
        return None
    warnings.warn(f"{run}: {data} holds neither transforms_train.json (NeRF Blender) nor transforms.json "
                  "(nerfstudio); poses are drawn all around the scene's box", stacklevel=2)
    return None


def _find_data(named: Path, run: Path) -> Path | None:
    """The data set path as written (absolute, or relative to where ns-train ran: here, or the
    folder holding ``outputs/``, three levels above the run)."""
    candidates = [named] if named.is_absolute() else [Path.cwd() / named, *(p / named for p in run.resolve().parents[2:5])]
    return next((c for c in candidates if c.exists()), None)


def _blender_cameras(root: Path) -> Cameras:
    """The training cameras of a NeRF Blender folder; the image size comes from the first image
    (nerfstudio's blender parser does the same), or is 800x800 when the images are gone."""
    source = root / "transforms_train.json"
    meta = read_transforms(source)
    if not meta["frames"]:
        raise DatasetError(f"{source}: 'frames' is empty")
    angle = camera_angle(meta, source)
    c2w = torch.from_numpy(np.stack([frame_matrix(f, source, i) for i, f in enumerate(meta["frames"])])).float()
    try:
        from PIL import Image

        with Image.open(frame_image_path(root, meta["frames"][0], source, 0)) as image:
            width, height = image.size
    except OSError:
        width = height = BLENDER_SIZE
    focal = torch.full((len(c2w),), 0.5 * width / math.tan(0.5 * angle))
    return Cameras(c2w, focal, focal.clone(), torch.full_like(focal, width / 2), torch.full_like(focal, height / 2),
                   width, height)


def _capture_cameras(source: Path, downscale: Any) -> Cameras:
    """The cameras of a nerfstudio ``transforms.json`` (shared or per-frame intrinsics)."""
    meta = read_transforms(source)
    frames = meta["frames"]
    if not frames:
        raise DatasetError(f"{source}: 'frames' is empty")
    c2w = torch.from_numpy(np.stack([frame_matrix(f, source, i) for i, f in enumerate(frames)])).float()
    intr = torch.tensor([[frame_intrinsic(f, meta, k, source, i) for k in INTRINSICS] for i, f in enumerate(frames)])
    if len(torch.unique(intr[:, 4:6], dim=0)) > 1:
        raise DatasetError(f"{source}: frames declare different image sizes (w, h)")
    factor = float(downscale) if isinstance(downscale, (int, float)) and downscale > 0 else 1.0
    intr = intr / factor
    return Cameras(c2w, intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3], round(float(intr[0, 4])),
                   round(float(intr[0, 5])))


def _layers(state: dict[str, Any], prefix: str, ckpt: Path) -> list[tuple[Tensor, Tensor]]:
    """``prefix{i}.weight`` / ``.bias`` for i = 0, 1, ... (nerfstudio's MLP.layers)."""
    out = []
    while isinstance(state.get(f"{prefix}{len(out)}.weight"), Tensor):
        i = len(out)
        out.append((state[f"{prefix}{i}.weight"].float(), state[f"{prefix}{i}.bias"].float()))
    if not out:
        raise CheckpointError(f"{ckpt}: no {prefix}0.weight in this nerfacto checkpoint")
    return out


def _proposal_sampler(state: dict[str, Any], model: dict[str, Any], average_init_density: float, ckpt: Path):
    """nerfacto's proposal sampler (PyTorch build) from the checkpoint and the model config;
    None for another layout (tiny-cuda-nn's networks, one shared network, linear heads)."""
    from radistill.fields.nerfacto import NerfstudioHashGrid
    from radistill.fields.nerfacto_proposals import ProposalDensity, ProposalSampler, SamplerSettings

    settings = SamplerSettings(
        proposal_samples=tuple(int(v) for v in model.get("num_proposal_samples_per_ray", (256, 96))),
        nerf_samples=int(model.get("num_nerf_samples_per_ray", 48)), far=float(model.get("far_plane", 1000.0)),
        piecewise=model.get("proposal_initial_sampler", "piecewise") != "uniform")
    rounds = int(model.get("num_proposal_iterations", 2))
    if model.get("use_same_proposal_network") or rounds != len(settings.proposal_samples):
        return None
    args = model.get("proposal_net_args_list") or []
    networks = []
    for i in range(rounds):
        prefix = f"_model.proposal_networks.{i}."
        table = state.get(prefix + "encoding.hash_table")
        sizes = [state.get(prefix + key) for key in ("num_levels", "log2_hashmap_size", "max_res")]
        if (not isinstance(table, Tensor) or not isinstance(state.get(prefix + "mlp_base.1.layers.0.weight"), Tensor)
                or not all(isinstance(v, Tensor) and v.numel() == 1 for v in sizes)):
            return None
        levels, log2, max_res = (int(v) for v in sizes)
        if table.shape[0] != levels << log2:
            return None
        base_res = int(args[i].get("base_res", 16)) if i < len(args) and isinstance(args[i], dict) else 16
        grid = NerfstudioHashGrid(table, levels, log2, base_res, max_res)
        networks.append(ProposalDensity(grid, _layers(state, prefix + "mlp_base.1.layers.", ckpt), average_init_density))
    return ProposalSampler(networks, settings)


def data_parser(config: dict[str, Any]) -> dict[str, Any]:
    """The data parser's options in a run's ``config.yml`` (empty when it names none)."""
    datamanager = (config.get("pipeline") or {}).get("datamanager") or {}
    parser = datamanager.get("dataparser") if isinstance(datamanager, dict) else None
    return parser if isinstance(parser, dict) else {}


BLENDER_BOX = 1.5
"""Half side of the scene box nerfstudio's ``blender-data`` parser declares (fixed in its code)."""


def scene_box_half_side(config: dict[str, Any]) -> float:
    """Half side of the scene box a run's data parser declared, in nerfstudio's frame:
    ``BLENDER_BOX`` for ``blender-data``, else its ``scene_scale`` (1 by default, as
    ``nerfstudio-data`` and ``colmap`` have it)."""
    parser = data_parser(config)
    if "blender" in str(parser.get("__class__", "")).lower():
        return BLENDER_BOX
    value = parser.get("scene_scale", 1.0)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0


def _nerfacto_field(state: dict[str, Any], config: dict[str, Any], ckpt: Path, frame: Similarity):
    from radistill.fields.nerfacto import NerfactoConfig, NerfactoField

    model = config.get("pipeline", {}).get("model", {}) if isinstance(config.get("pipeline"), dict) else {}
    if model.get("disable_scene_contraction"):
        raise CheckpointError(f"{ckpt}: a nerfacto run without scene contraction is not supported yet")
    levels, log2 = int(model.get("num_levels", 16)), int(model.get("log2_hashmap_size", 19))
    features = int(model.get("features_per_level", 2))
    appearance = state.get("_model.field.embedding_appearance.embedding.weight")
    if isinstance(appearance, Tensor):
        appearance = appearance.float().mean(0) if model.get("use_average_appearance_embedding", True) \
            else torch.zeros(appearance.shape[1])
    else:
        appearance = None
    cfg = NerfactoConfig(levels=levels, features=features, log2_table=log2, min_res=int(model.get("base_res", 16)),
                         max_res=int(model.get("max_res", 2048)),
                         average_init_density=float(model.get("average_init_density", 1.0)), scale=frame.scale,
                         box=scene_box_half_side(config), rotation=frame.rotation.tolist(),
                         translation=frame.translation.tolist(), source=str(ckpt))
    if isinstance(state.get("_model.field.mlp_base.model.params"), Tensor):
        return _nerfacto_tcnn(state, model, cfg, appearance, ckpt)
    table = state.get("_model.field.mlp_base.model.0.hash_table")
    if not isinstance(table, Tensor):
        found = sorted(k for k in state if k.startswith("_model.field."))[:8]
        raise CheckpointError(f"{ckpt}: neither _model.field.mlp_base.model.0.hash_table (the PyTorch build) nor "
                              f"_model.field.mlp_base.model.params (tiny-cuda-nn) (found {', '.join(found) or 'none'})")
    if table.shape[0] != levels << log2:
        raise CheckpointError(f"{ckpt}: the hash table has {table.shape[0]} rows, but {levels} levels of 2^{log2} "
                              f"need {levels << log2}")
    field = NerfactoField(cfg, table, _layers(state, "_model.field.mlp_base.model.1.layers.", ckpt),
                          _layers(state, "_model.field.mlp_head.layers.", ckpt), appearance)
    field.proposals = _proposal_sampler(state, model, cfg.average_init_density, ckpt)  # renders as nerfstudio does
    return field


def _nerfacto_tcnn(state: dict[str, Any], model: dict[str, Any], cfg, appearance: Tensor | None, ckpt: Path):
    """nerfacto's tiny-cuda-nn build: the base network's matrices then its hash grid in one vector,
    the colour network's matrices in another (no biases, padded widths)."""
    import numpy as np

    from radistill.fields.hashgrid import level_layout
    from radistill.fields.nerfacto import NerfactoField
    from radistill.io.tcnn import mlp_shapes, split_matrices

    def align(width: int) -> int:  # nerfstudio picks FullyFusedMLP for these widths, CutlassMLP otherwise
        return 16 if width in (16, 32, 64, 128) else 8

    head_vec = state.get("_model.field.mlp_head.tcnn_encoding.params")
    if not isinstance(head_vec, Tensor):
        raise CheckpointError(f"{ckpt}: no _model.field.mlp_head.tcnn_encoding.params in this tiny-cuda-nn nerfacto run")
    hidden, hidden_color = int(model.get("hidden_dim", 64)), int(model.get("hidden_dim_color", 64))
    base_shapes = mlp_shapes(cfg.levels * cfg.features, 16, hidden, 1, align(hidden))  # 2 layers: 1 hidden
    n_head_in = 16 + 15 + (0 if appearance is None else appearance.shape[0])
    head_shapes = mlp_shapes(n_head_in, 3, hidden_color, 2, align(hidden_color))  # 3 layers: 2 hidden
    growth = math.exp((math.log(cfg.max_res) - math.log(cfg.min_res)) / (cfg.levels - 1)) if cfg.levels > 1 else 1.0
    layout = level_layout(cfg.levels, cfg.log2_table, cfg.min_res, growth)
    rows = layout[-1]["offset"] + layout[-1]["size"]
    base_vec = state["_model.field.mlp_base.model.params"].detach().float().numpy()
    head_np = head_vec.detach().float().numpy()
    need_base = sum(o * i for o, i in base_shapes) + rows * cfg.features
    need_head = sum(o * i for o, i in head_shapes)
    if base_vec.size != need_base or head_np.size != need_head:
        raise CheckpointError(f"{ckpt}: tiny-cuda-nn parameter vectors of {base_vec.size} and {head_np.size} values, but "
                              f"nerfacto's config needs {need_base} and {need_head}: a layout this reader does not know")
    base, grid = split_matrices(base_vec, base_shapes)
    head, _ = split_matrices(head_np, head_shapes)
    table = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32).reshape(rows, cfg.features))
    cfg.encoding = "tcnn"
    return NerfactoField(cfg, table, [(w, None) for w in base], [(w, None) for w in head], appearance)
