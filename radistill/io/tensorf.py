"""TensoRF checkpoints (``.th``, apchenstu/TensoRF) as teachers.

What the file holds (``TensorBase.save`` in models/tensorBase.py): a dict with ``kwargs`` (the
model's constructor arguments: ``aabb``, ``gridSize``, ``density_shift``, ``distance_scale``,
``fea2denseAct``, ``shadingMode``, ``view_pe``, ``fea_pe``, ``featureC``, ``step_ratio``, ...),
``state_dict`` (``density_plane.i`` / ``density_line.i`` / ``app_plane.i`` / ``app_line.i``,
``basis_mat.weight``, ``renderModule.mlp.{0,2,4}``), and when an alpha mask was built,
``alphaMask.shape`` (a 5-d tuple), ``alphaMask.mask`` (``np.packbits`` of the boolean volume)
and ``alphaMask.aabb``. The model class is told apart by its tensors: planes make it
``TensorVMSplit``, lines alone ``TensorCP``. A model trained in NDC (TensoRF's ``ndc_ray`` for
forward-facing LLFF scenes) cannot be told from its kwargs; it would be read as a world-space
model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from radistill.errors import CheckpointError
from radistill.fields.tensorf_original import SHADING_MODES, TensoRFCheckpointConfig, TensoRFCheckpointField
from radistill.io.foreign import load_pickled_weights

TENSORF_SUFFIXES = (".th",)
WHAT = "a TensoRF checkpoint (apchenstu/TensoRF .th)"


def _tensor(state: dict[str, Any], key: str, path: Path) -> Tensor:
    value = state.get(key)
    if not isinstance(value, Tensor):
        raise CheckpointError(f"{path}: {WHAT} needs the tensor {key!r} in its state_dict; found "
                              f"{', '.join(sorted(state)[:12]) or 'nothing'}")
    return value.float()


def _render_module(state: dict[str, Tensor], path: Path) -> nn.Module:
    """TensoRF's colour MLP: Linear, ReLU, Linear, ReLU, Linear (indices 0, 2, 4)."""
    layers: list[nn.Module] = []
    for i in (0, 2, 4):
        w = _tensor(state, f"renderModule.mlp.{i}.weight", path)
        b = _tensor(state, f"renderModule.mlp.{i}.bias", path)
        linear = nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data.copy_(w)
        linear.bias.data.copy_(b)
        layers += [linear, nn.ReLU()] if i < 4 else [linear]
    return nn.Sequential(*layers)


def _alpha_mask(ckpt: dict[str, Any], path: Path) -> tuple[Tensor | None, Tensor | None]:
    """The unpacked alpha mask as a [1, 1, Z, Y, X] volume and its aabb (None when absent)."""
    if "alphaMask.mask" not in ckpt:
        return None, None
    try:
        shape = tuple(int(v) for v in ckpt["alphaMask.shape"])[-3:]
        bits = np.unpackbits(np.asarray(ckpt["alphaMask.mask"], dtype=np.uint8))
        mask = torch.from_numpy(bits[: int(np.prod(shape))].reshape(shape).astype(np.float32))[None, None]
        aabb = torch.as_tensor(ckpt["alphaMask.aabb"], dtype=torch.float32).reshape(2, 3)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its alpha mask is incomplete ('alphaMask.shape', 'alphaMask.mask' with enough "
                              f"bits, and 'alphaMask.aabb' are needed): {exc}") from None
    return mask, aabb


def load_tensorf(path: str | Path) -> TensoRFCheckpointField:
    """A TensoRF ``.th`` checkpoint as a field that can teach any radistill kind.

    Raises:
        CheckpointError: the file is not such a checkpoint, needs code to unpickle, or uses a
            shading mode or density activation that is not supported (named in the message).
    """
    path = Path(path)
    ckpt = load_pickled_weights(path, WHAT)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("kwargs"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        found = ", ".join(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: {WHAT} is a dict with 'kwargs' and 'state_dict'; found {found}")
    kwargs, state = ckpt["kwargs"], ckpt["state_dict"]
    vm = "density_plane.0" in state
    if not vm and "density_line.0" not in state:
        raise CheckpointError(f"{path}: neither TensorVMSplit planes nor TensorCP lines in its state_dict "
                              f"(found {', '.join(sorted(state)[:12])}); supported models: TensorVMSplit, TensorCP")
    shading = str(kwargs.get("shadingMode", "MLP_PE"))
    if shading not in SHADING_MODES:
        raise CheckpointError(f"{path}: shading mode {shading!r} is not supported (supported: {', '.join(SHADING_MODES)}; "
                              "TensoRF's MLP_PE does not run as released: its first layer is 3 inputs wider than its input)")
    fea2dense = str(kwargs.get("fea2denseAct", "softplus"))
    if fea2dense not in ("softplus", "relu"):
        raise CheckpointError(f"{path}: density activation {fea2dense!r} is not supported (softplus or relu)")
    try:
        aabb = torch.as_tensor(kwargs["aabb"], dtype=torch.float32).reshape(2, 3)
        grid = [int(v) for v in kwargs["gridSize"]]
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: kwargs need 'aabb' (2x3) and 'gridSize' (3 ints): {exc}") from None
    config = TensoRFCheckpointConfig(
        model="TensorVMSplit" if vm else "TensorCP", grid_size=grid,
        density_shift=float(kwargs.get("density_shift", -10.0)), distance_scale=float(kwargs.get("distance_scale", 25.0)),
        fea2dense=fea2dense, shading=shading, view_pe=int(kwargs.get("view_pe", 6)), fea_pe=int(kwargs.get("fea_pe", 6)),
        step_ratio=float(kwargs.get("step_ratio", 0.5)), source=str(path))
    lines = {p: [_tensor(state, f"{p}_line.{i}", path) for i in range(3)] for p in ("density", "app")}
    planes = {p: [_tensor(state, f"{p}_plane.{i}", path) for i in range(3)] for p in ("density", "app")} if vm else None
    basis = _tensor(state, "basis_mat.weight", path)
    components = sum(x.shape[1] for x in lines["app"]) if vm else lines["app"][0].shape[1]
    if basis.shape[1] != components:
        raise CheckpointError(f"{path}: basis_mat.weight is {list(basis.shape)} but the appearance tensors have "
                              f"{components} components")
    if not vm and len({x.shape[1] for x in lines["density"]}) + len({x.shape[1] for x in lines["app"]}) != 2:
        raise CheckpointError(f"{path}: TensorCP's three lines must have one component count each for density "
                              "and appearance")
    if vm and any(p.shape[1] != q.shape[1] for p, q in zip(planes["density"] + planes["app"],
                                                          lines["density"] + lines["app"])):
        raise CheckpointError(f"{path}: each plane must have as many components as its line")
    app_dim = basis.shape[0]
    render_module = None
    if shading in ("MLP_Fea", "MLP"):
        render_module = _render_module(state, path)
        view_pe, fea_pe = config.view_pe, config.fea_pe if shading == "MLP_Fea" else 0
        width = 3 + app_dim + 6 * view_pe + 2 * fea_pe * app_dim
        if render_module[0].in_features != width:
            raise CheckpointError(f"{path}: the colour MLP takes {render_module[0].in_features} inputs, but {shading} "
                                  f"with {app_dim} features, view_pe={view_pe} and fea_pe={fea_pe} gives {width}")
    elif (shading, app_dim) not in (("SH", 27), ("RGB", 3)):
        raise CheckpointError(f"{path}: {shading} shading needs {27 if shading == 'SH' else 3} appearance features, "
                              f"the basis gives {app_dim}")
    mask, mask_aabb = _alpha_mask(ckpt, path)
    return TensoRFCheckpointField(config, aabb, lines["density"], lines["app"], basis,
                                  planes["density"] if vm else None, planes["app"] if vm else None,
                                  render_module, mask, mask_aabb)
