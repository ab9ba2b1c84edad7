"""Instant-NGP snapshots (``.msgpack``, and ``.ingp``: the same msgpack, gzip-compressed) as teachers.

What a snapshot holds (src/testbed.cu ``save_snapshot``; tiny-cuda-nn ``Trainer::serialize``):
the network config at the top level (``encoding``, ``network``, ``dir_encoding``,
``rgb_network``) and ``snapshot`` with ``version``, ``params_type`` (``"__half"`` or
``"float"``), ``n_params``, ``params_binary`` (the inference weights: density MLP, then RGB MLP,
then the hash grid; SH has none), ``density_grid_binary`` (fp16), ``aabb`` and ``nerf.dataset``
(``scale``, ``offset``, ``aabb_scale``). ``per_level_scale`` is usually absent from the saved
encoding (Instant-NGP computes it at start-up), so it is recomputed from ``aabb_scale`` when
missing. Only the NeRF mode with hash-grid encoding and fully fused (or CUTLASS) MLPs is read.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radistill.errors import CheckpointError
from radistill.fields.hashgrid import level_layout
from radistill.fields.instant_ngp import InstantNGPConfig, InstantNGPField, per_level_scale_from
from radistill.io.tcnn import mlp_shapes, split_matrices

INSTANT_NGP_SUFFIXES = (".msgpack", ".ingp")
WHAT = "an Instant-NGP snapshot"


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """The snapshot's msgpack document (gunzipped first when it is gzip or zlib data)."""
    import msgpack

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:1] == b"\x78":
            data = zlib.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CheckpointError(f"{path}: not readable as {WHAT} (its compressed data is broken: {exc})") from None
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad data
        raise CheckpointError(f"{path}: not readable as {WHAT} (not msgpack data: {type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("snapshot"), dict):
        found = ", ".join(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{path}: {WHAT} has a 'snapshot' entry; found {found}")
    return doc


def _mlp_shapes(config: dict[str, Any], n_in: int, n_out: int, path: Path, name: str) -> tuple[list[tuple[int, int]], int]:
    otype = str(config.get("otype", "FullyFusedMLP"))
    if otype not in ("FullyFusedMLP", "CutlassMLP", "MegakernelMLP"):
        raise CheckpointError(f"{path}: {name} is a {otype!r}; supported: FullyFusedMLP, MegakernelMLP, CutlassMLP")
    if str(config.get("activation", "ReLU")) != "ReLU" or str(config.get("output_activation", "None")) != "None":
        raise CheckpointError(f"{path}: {name} must use ReLU hidden layers and no output activation "
                              f"(found {config.get('activation')!r} and {config.get('output_activation')!r})")
    align = 8 if otype == "CutlassMLP" else 16
    width, hidden = int(config.get("n_neurons", 64)), int(config.get("n_hidden_layers", 1))
    return mlp_shapes(n_in, n_out, width, hidden, align), align


def _sh_degree(config: dict[str, Any]) -> int | None:
    if config.get("otype") == "SphericalHarmonics":
        return int(config.get("degree", 4))
    if config.get("otype") == "Composite":
        for part in config.get("nested", []):
            if part.get("otype") == "SphericalHarmonics":
                return int(part.get("degree", 4))
    return None


def load_instant_ngp(path: str | Path) -> InstantNGPField:
    """An Instant-NGP NeRF snapshot as a field that can teach any radistill kind.

    Raises:
        CheckpointError: not such a snapshot, an older snapshot format, or a network this
            reader does not support (the message names what was found).
    """
    path = Path(path)
    doc = read_snapshot(path)
    snap = doc["snapshot"]
    version = int(snap.get("version", 0))
    if version < 1:
        raise CheckpointError(f"{path}: snapshot format version {version}; supported: 1 (Instant-NGP since 2022)")
    enc = doc.get("encoding", {})
    if str(enc.get("otype", "")).lower() not in ("hashgrid", "grid") or enc.get("type", "Hash") != "Hash":
        raise CheckpointError(f"{path}: the position encoding is {enc.get('otype')!r}; supported: HashGrid")
    sh = _sh_degree(doc.get("dir_encoding", {}))
    if sh != 4:
        raise CheckpointError(f"{path}: the direction encoding must be degree-4 spherical harmonics "
                              f"(found {doc.get('dir_encoding')})")
    if str(enc.get("interpolation", "Linear")) != "Linear":
        raise CheckpointError(f"{path}: the hash grid's interpolation is {enc.get('interpolation')!r}; supported: Linear")
    dataset = snap.get("nerf", {}).get("dataset", {})
    if dataset.get("from_mitsuba"):
        raise CheckpointError(f"{path}: a snapshot of a Mitsuba data set (another axis convention); "
                              "supported: NeRF data sets (transforms.json)")
    if int(dataset.get("n_extra_learnable_dims", 0)):
        raise CheckpointError(f"{path}: {dataset['n_extra_learnable_dims']} extra learnable dimensions per image "
                              "(appearance codes) are not supported")
    aabb_scale = float(dataset.get("aabb_scale", snap.get("nerf", {}).get("aabb_scale", 1.0)))
    levels, features = int(enc.get("n_levels", 16)), int(enc.get("n_features_per_level", 2))
    log2_table, base = int(enc.get("log2_hashmap_size", 19)), int(enc.get("base_resolution", 16))
    per_level = float(enc.get("per_level_scale") or per_level_scale_from(aabb_scale, levels, base))
    density_shapes, _ = _mlp_shapes(doc.get("network", {}), levels * features, 16, path, "the density network")
    rgb_shapes, _ = _mlp_shapes(doc.get("rgb_network", {}), 16 + 16, 3, path, "the RGB network")
    layout = level_layout(levels, log2_table, base, per_level)
    grid_rows = layout[-1]["offset"] + layout[-1]["size"]
    sizes = [o * i for o, i in density_shapes + rgb_shapes]
    expected = sum(sizes) + grid_rows * features
    dtype = {"__half": np.float16, "float": np.float32}.get(snap.get("params_type", "__half"))
    if dtype is None:
        raise CheckpointError(f"{path}: params_type {snap.get('params_type')!r}; supported: __half, float")
    raw = snap.get("params_binary")
    if not isinstance(raw, (bytes, bytearray)):
        raise CheckpointError(f"{path}: snapshot.params_binary is missing or not binary")
    if len(raw) % np.dtype(dtype).itemsize:
        raise CheckpointError(f"{path}: params_binary holds {len(raw)} bytes, not whole {snap.get('params_type')} values")
    params = np.frombuffer(bytes(raw), dtype=dtype)
    if params.size != expected or int(snap.get("n_params", params.size)) != params.size:
        raise CheckpointError(f"{path}: {params.size} parameters, but the networks and the {levels}-level hash grid "
                              f"of its config need {expected}: a layout this reader does not know")
    tensors, grid = split_matrices(params, density_shapes + rgb_shapes)  # row-major [out, in]
    table = torch.from_numpy(grid.astype(np.float32).reshape(grid_rows, features))
    density_grid = None
    grid_raw = snap.get("density_grid_binary")
    if isinstance(grid_raw, (bytes, bytearray)) and len(grid_raw):
        values = np.frombuffer(bytes(grid_raw), dtype=np.float16).astype(np.float32)
        if values.size % 128**3:
            raise CheckpointError(f"{path}: density grid of {values.size} values is not whole 128^3 cascades")
        density_grid = torch.from_numpy(values.reshape(-1, 128**3))
    box = snap.get("aabb", {})
    lo = [float(v) for v in box.get("min", [0.5 - min(aabb_scale, 128) / 2] * 3)]
    hi = [float(v) for v in box.get("max", [0.5 + min(aabb_scale, 128) / 2] * 3)]
    scale = float(dataset.get("scale", 0.33))
    config = InstantNGPConfig(levels=levels, features=features, log2_table=log2_table, base_resolution=base,
                              per_level_scale=per_level, scale=scale,
                              offset=[float(v) for v in dataset.get("offset", [0.5, 0.5, 0.5])],
                              ngp_aabb=[lo, hi], volume_step=max(int(math.ceil(1024 * max(h - l for l, h in zip(lo, hi)))), 2),
                              source=str(path))
    n_density = len(density_shapes)
    return InstantNGPField(config, table, tensors[:n_density], tensors[n_density:], density_grid)
