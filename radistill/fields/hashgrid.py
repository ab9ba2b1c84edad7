"""``hashgrid``: Instant-NGP's multiresolution hash encoding, then a small MLP to the junction.

The table layout and hash follow tiny-cuda-nn, so weights can move between backends: level
``l`` has ``scale = base * b^l - 1`` and ``resolution = ceil(scale) + 1``, a point's grid
position is ``x * scale + 0.5`` for ``x`` in [0, 1], levels whose ``resolution^3`` fits the
table are indexed densely (``i + j r + k r^2``), the others by
``i ^ (j * 2654435761) ^ (k * 805459861)`` modulo the table size; each level holds
``min(resolution^3, T)`` entries rounded up to a multiple of 8, levels stored one after another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from radistill.errors import ConfigError
from radistill.fields.base import JUNCTION_DIM
from radistill.fields.gather import weighted_rows
from radistill.fields.neural import NeuralConfig, NeuralField, mlp
from radistill.kernels import resolve_backend

PRIMES = (1, 2654435761, 805459861)
FUSED_FEATURES = (1, 2, 4, 8)
"""Features per level the Triton kernel takes; ``auto`` uses the reference for other counts."""
# the same primes as int32 (two's complement): their products agree with uint32 in the low bits
PRIME_Y = PRIMES[1] - (1 << 32)
PRIME_Z = PRIMES[2]
CORNERS = tuple((dx, dy, dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1))
"""The 8 corners of a cell, in the order of the rows and weights (dx, dy, dz binary)."""


def level_layout(levels: int, log2_table: int, base_resolution: int, per_level_scale: float) -> list[dict[str, Any]]:
    """Scale, resolution, entry count, offset and dense/hashed flag of each level (tcnn layout)."""
    table = 1 << log2_table
    out, offset = [], 0
    for level in range(levels):
        scale = base_resolution * per_level_scale**level - 1.0
        resolution = int(math.ceil(scale)) + 1
        dense = resolution**3 <= table
        size = min(resolution**3, table)
        size = (size + 7) // 8 * 8
        out.append({"scale": scale, "resolution": resolution, "size": size, "offset": offset, "dense": dense})
        offset += size
    return out


def hash_corner_indices(pos_grid: Tensor, layout: dict[str, Tensor]) -> Tensor:
    """Table row of the 8 corners of each point's cell, level-major.

    Args:
        pos_grid: integer cell corner (floor of the grid position).  # [L, N, 3] int32
        layout: per-level ``resolution``, ``size``, ``offset``, ``dense`` tensors.  # [L] each
    Returns:
        rows of the concatenated table, corners ordered (dx, dy, dz) binary.  # [L, N, 8] int32
    """
    levels, n, _ = pos_grid.shape
    # corner-major while computing ([8, L, N]: whole-array integer ops, where [..., 8] ones run
    # 8-wide inner loops), one transpose at the end; about twice as fast on CPU
    out = torch.empty(8, levels, n, dtype=torch.int32, device=pos_grid.device)
    n_dense = int(layout["dense"].sum())
    if n_dense:  # dense levels: i + j r + k r^2; like tcnn the index wraps modulo the level
        # size (a corner can sit one past the grid)
        px, py, pz = pos_grid[:n_dense].unbind(-1)
        res = layout["resolution"][:n_dense].to(torch.int32)[:, None]
        size = layout["size"][:n_dense].to(torch.int32)[:, None]
        offset = layout["offset"][:n_dense].to(torch.int32)[:, None]
        base = px + py * res + pz * (res * res)
        for k, (dx, dy, dz) in enumerate(CORNERS):
            corner = out[k, :n_dense]
            torch.add(base, dx + dy * res + dz * res * res, out=corner)
            torch.remainder(corner, size, out=corner)
            corner.add_(offset)
    if n_dense < levels:  # hashed levels: the table size is a power of two, so the modulo is a
        # mask; int32 products wrap like tcnn's uint32 ones in the low bits that are kept
        px, py, pz = pos_grid[n_dense:].unbind(-1)
        hx, hy, hz = (px, px + 1), (py * PRIME_Y, (py + 1) * PRIME_Y), (pz * PRIME_Z, (pz + 1) * PRIME_Z)
        mask = (layout["size"][n_dense:] - 1).to(torch.int32)[:, None]
        offset = layout["offset"][n_dense:].to(torch.int32)[:, None]
        for k, (dx, dy, dz) in enumerate(CORNERS):
            corner = out[k, n_dense:]
            torch.bitwise_xor(hx[dx] ^ hy[dy], hz[dz], out=corner)
            corner.bitwise_and_(mask).add_(offset)
    return out.permute(1, 2, 0).contiguous()


def trilinear_weights(frac: Tensor) -> Tensor:
    """Weights of the 8 cell corners, same order as ``hash_corner_indices``.  # [L, N, 8]"""
    levels, n, _ = frac.shape
    high = frac.unbind(-1)
    low = tuple(1.0 - f for f in high)
    out = torch.empty(8, levels, n, dtype=frac.dtype, device=frac.device)  # corner-major, as above
    xy = {(dx, dy): (high if dx else low)[0] * (high if dy else low)[1] for dx in (0, 1) for dy in (0, 1)}
    for k, (dx, dy, dz) in enumerate(CORNERS):
        torch.mul(xy[dx, dy], (high if dz else low)[2], out=out[k])
    return out.permute(1, 2, 0).contiguous()


def hash_encode(u: Tensor, table: Tensor, layout: dict[str, Tensor], backend: str = "torch") -> Tensor:
    """Multiresolution hash encoding of points ``u`` in [0, 1]^3.

    This is the PyTorch reference of the fused kernel ``radistill.kernels.hash_encoding``;
    ``backend`` picks which runs (``"auto"``: Triton for CUDA tensors when it is installed).
    Gradients flow to ``table`` (not to ``u``).

    Args:
        u: normalised positions.  # [N, 3]
        table: all levels' feature vectors, one after another.  # [sum(size), F]
        layout: per-level tensors from ``HashEncoding``.
    Returns:
        features, level-major per point.  # [N, L * F]
    """
    with torch.profiler.record_function("radistill.hash_encode"):
        if resolve_backend(backend, u.device) == "triton" and (backend == "triton" or table.shape[1] in FUSED_FEATURES):
            from radistill.kernels.hash_encoding import hash_encode as fused

            return fused(u, table, layout)
        return _hash_encode_gather(u, table, layout)


def _hash_encode_gather(u: Tensor, table: Tensor, layout: dict[str, Tensor]) -> Tensor:
    """The reference: corner rows and weights as arrays, then one weighted gather."""
    n = u.shape[0]
    levels = layout["scale"].shape[0]
    pos = u.detach()[None, :, :] * layout["scale"][:, None, None] + 0.5  # [L, N, 3]
    pos_grid = torch.floor(pos)
    rows = hash_corner_indices(pos_grid.to(torch.int32), layout)  # [L, N, 8]
    weights = trilinear_weights(pos - pos_grid).to(table.dtype)  # [L, N, 8]
    feats = weighted_rows(table, rows.reshape(levels * n, 8), weights.reshape(levels * n, 8))
    features = table.shape[1]  # explicit sizes: no point at all (an empty batch) is a valid input
    return feats.reshape(levels, n, features).transpose(0, 1).reshape(n, levels * features)


class HashEncoding(nn.Module):
    """The hash table and its layout."""

    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19, base_resolution: int = 16,
                 max_resolution: int = 2048, init_scale: float = 1e-4, backend: str = "auto",
                 per_level_scale: float | None = None) -> None:
        super().__init__()
        self.backend = backend
        if per_level_scale is None:  # the growth that takes the finest level to max_resolution
            per_level_scale = math.exp(math.log(max_resolution / base_resolution) / max(levels - 1, 1))
        self.levels, self.features = levels, features
        self.layout = level_layout(levels, log2_table, base_resolution, per_level_scale)
        total = self.layout[-1]["offset"] + self.layout[-1]["size"]
        self.table = nn.Parameter(torch.empty(total, features).uniform_(-init_scale, init_scale))
        for key, dtype in (("scale", torch.float32), ("resolution", torch.long), ("size", torch.long),
                           ("offset", torch.long), ("dense", torch.bool)):
            self.register_buffer(f"layout_{key}", torch.tensor([lv[key] for lv in self.layout], dtype=dtype), persistent=False)

    @classmethod
    def from_table(cls, table: Tensor, levels: int, log2_table: int, base_resolution: int,
                   per_level_scale: float) -> "HashEncoding":
        """A fixed encoding holding another program's trained table (tiny-cuda-nn layout)."""
        enc = cls(levels, table.shape[1], log2_table, base_resolution, per_level_scale=per_level_scale)
        if enc.table.shape != table.shape:
            raise ValueError(f"a {levels}-level table of 2^{log2_table} has {tuple(enc.table.shape)} entries, "
                             f"got {tuple(table.shape)}")
        enc.table = nn.Parameter(table.float(), requires_grad=False)
        return enc

    def layout_tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, f"layout_{k}") for k in ("scale", "resolution", "size", "offset", "dense")}

    def forward(self, u: Tensor) -> Tensor:  # [N, 3] -> [N, L * F]
        return hash_encode(u, self.table, self.layout_tensors(), self.backend)


@dataclass
class HashGridConfig(NeuralConfig):
    """Options of the ``hashgrid`` kind (Instant-NGP's defaults unless noted)."""

    levels: int = 16
    features: int = 2
    """Features per level."""
    log2_table: int = 19
    """log2 of the entries per level (T)."""
    base_resolution: int = 16
    max_resolution: int = 2048
    hidden: int = 64
    """Width of the MLP from the encoding to the junction (one hidden layer)."""
    lr: float = 1e-2
    """Learning rate of the table and its MLP."""
    lr_decoder: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels < 1 or self.features < 1 or self.base_resolution < 2 or self.max_resolution < self.base_resolution:
            raise ConfigError(f"hashgrid: needs levels >= 1, features >= 1 and 2 <= base_resolution <= max_resolution, "
                              f"got levels={self.levels}, features={self.features}, base_resolution="
                              f"{self.base_resolution}, max_resolution={self.max_resolution}")


class HashGridEncoder(nn.Module):
    def __init__(self, cfg: HashGridConfig) -> None:
        super().__init__()
        self.grid = HashEncoding(cfg.levels, cfg.features, cfg.log2_table, cfg.base_resolution, cfg.max_resolution,
                                 backend=cfg.backend)
        self.net = mlp(cfg.levels * cfg.features, cfg.hidden, 1, JUNCTION_DIM)

    def forward(self, u: Tensor) -> Tensor:
        return self.net(self.grid(u))


class HashGridField(NeuralField):
    kind = "hashgrid"
    Config = HashGridConfig
    config: HashGridConfig

    def __init__(self, config: HashGridConfig, aabb: Tensor) -> None:
        super().__init__(config, aabb)
        self.encoder = HashGridEncoder(config)

    def encoder_param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": [self.encoder.grid.table], "lr": self.config.lr, "eps": 1e-15},
            {"params": list(self.encoder.net.parameters()), "lr": self.config.lr, "weight_decay": 1e-6},
        ]
