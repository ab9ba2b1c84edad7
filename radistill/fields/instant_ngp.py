"""Instant-NGP's NeRF network (NVlabs/instant-ngp snapshots), as a teacher.

The network (include/neural-graphics-primitives/nerf_network.h) is a tiny-cuda-nn hash grid on
the position, a fully fused MLP to 16 raw values (the first is log-density), and a second MLP
on those 16 values followed by degree-4 spherical harmonics of the direction, to RGB:
``density = exp(h[0])``, ``rgb = sigmoid(o[:3])``. The MLPs have no biases, ReLU hidden layers
and no output activation; each weight matrix is stored row-major, ``[outputs, inputs]``, with
inputs and outputs padded to multiples of 16.

Coordinates (src/nerf_loader.cu): a world point ``p`` of the data set's frame maps to
``v = p * scale + offset`` with its axes cycled to ``(v.y, v.z, v.x)``; the network sees
``(v - aabb.min) / (aabb.max - aabb.min)``, directions are cycled the same way. Instant-NGP
integrates ``density * dt`` in its own units, so the world-space density is ``scale`` times
its density. Space the renderer skips comes from its density grid: 128^3 cells per cascade in
Morton order, cascade ``k`` covering ``0.5 +- 2^(k-1)``; a cell counts when its value exceeds
``min(0.01, mean)``, the mean over cascade 0 with unseen cells (-1) counted as 0.

The hash grid has tiny-cuda-nn's layout, which radistill's ``hashgrid`` shares, so the
position encoding is radistill's ``HashEncoding`` holding the snapshot's table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from radistill.fields.base import FieldOutputs, RenderOutputs, Representation, render_volumetric
from radistill.fields.hashgrid import HashEncoding
from radistill.fields.sh import sh_basis

CYCLE = (1, 2, 0)  # ngp axis i is world axis CYCLE[i]


def morton3(i: Tensor, j: Tensor, k: Tensor) -> Tensor:
    """Interleaved bits of three 7-bit cell coordinates (x in bit 0, y in 1, z in 2, ...)."""
    code = torch.zeros_like(i)
    for bit in range(7):
        code |= ((i >> bit) & 1) << (3 * bit) | ((j >> bit) & 1) << (3 * bit + 1) | ((k >> bit) & 1) << (3 * bit + 2)
    return code


@dataclass
class InstantNGPConfig:
    """What an Instant-NGP snapshot says about its network and frame (read, not chosen)."""

    levels: int = 16
    features: int = 2
    log2_table: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.3819128800
    scale: float = 0.33
    """World to Instant-NGP units."""
    offset: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    ngp_aabb: list[list[float]] = field(default_factory=lambda: [[0.0] * 3, [1.0] * 3])
    """The training box in Instant-NGP's (cycled) frame."""
    volume_step: int = 1024
    """Samples along the diagonal of the box when this teacher renders (Instant-NGP's own
    step is sqrt(3)/1024 of a unit cube)."""
    source: str = ""


class InstantNGPField(Representation):
    """An Instant-NGP NeRF snapshot read by ``radistill.io.instant_ngp.load_instant_ngp``."""

    kind = "instant-ngp"
    Config = InstantNGPConfig
    config: InstantNGPConfig

    def __init__(self, config: InstantNGPConfig, table: Tensor, density_net: list[Tensor], rgb_net: list[Tensor],
                 density_grid: Tensor | None = None) -> None:
        lo, hi = torch.tensor(config.ngp_aabb[0]), torch.tensor(config.ngp_aabb[1])
        offset = torch.tensor(config.offset)
        inverse = [CYCLE.index(w) for w in range(3)]  # world axis w is ngp axis inverse[w]
        world = torch.stack([(lo[inverse] - offset) / config.scale, (hi[inverse] - offset) / config.scale])
        super().__init__(config, world)
        self.grid = HashEncoding.from_table(table, config.levels, config.log2_table, config.base_resolution,
                                            config.per_level_scale)
        self.register_buffer("ngp_lo", lo)
        self.register_buffer("ngp_size", hi - lo)
        self.register_buffer("offset", offset)
        self.density_net = nn.ParameterList([nn.Parameter(w.float(), requires_grad=False) for w in density_net])
        self.rgb_net = nn.ParameterList([nn.Parameter(w.float(), requires_grad=False) for w in rgb_net])
        self.register_buffer("density_grid", None if density_grid is None else density_grid.float())
        # Instant-NGP's threshold: min(0.01, mean of cascade 0 with unseen cells (-1) counted as 0)
        self.grid_threshold = 0.0 if density_grid is None else min(0.01, float(density_grid[0].clamp_min(0).mean()))

    def to_ngp(self, x: Tensor) -> Tensor:
        """World points to Instant-NGP's frame (scaled, offset, axes cycled).  # [N, 3]"""
        return (x * self.config.scale + self.offset)[:, list(CYCLE)]

    @staticmethod
    def _mlp(weights: Any, h: Tensor) -> Tensor:
        for i, w in enumerate(weights):
            h = h @ w.T
            if i < len(weights) - 1:
                h = torch.relu(h)
        return h

    def _raw(self, x: Tensor) -> Tensor:
        """The density network's 16 raw outputs at world points.  # [N, 16]"""
        u = ((self.to_ngp(x) - self.ngp_lo) / self.ngp_size).clamp(0.0, 1.0)
        enc = self.grid(u)
        pad = self.density_net[0].shape[1] - enc.shape[1]
        if pad:
            enc = torch.nn.functional.pad(enc, (0, pad))
        return self._mlp(self.density_net, enc)[:, :16]

    @torch.no_grad()
    def density(self, x: Tensor) -> Tensor:
        return torch.exp(self._raw(x)[:, 0]) * self.config.scale

    @torch.no_grad()
    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        h = self._raw(x)
        sh = sh_basis(d[:, list(CYCLE)], 3)  # tiny-cuda-nn's degree-4 encoding is the same 16 functions
        rgb_in = torch.cat([h, sh], -1)
        pad = self.rgb_net[0].shape[1] - rgb_in.shape[1]
        if pad:
            rgb_in = torch.nn.functional.pad(rgb_in, (0, pad))
        rgb = torch.sigmoid(self._mlp(self.rgb_net, rgb_in)[:, :3])
        sigma = torch.exp(h[:, 0]) * self.config.scale
        # the space Instant-NGP's renderer skips is empty here too (its own renders included)
        return FieldOutputs(torch.where(self.empty_mask(x), torch.zeros_like(sigma), sigma), rgb)

    def empty_mask(self, x: Tensor) -> Tensor | None:
        """Outside the training box, or in a cell of the density grid below Instant-NGP's threshold."""
        p = self.to_ngp(x)
        outside = ((p < self.ngp_lo) | (p > self.ngp_lo + self.ngp_size)).any(-1)
        if self.density_grid is None:
            return outside
        grid = self.density_grid  # [cascades, 128^3] in Morton order
        cascades = grid.shape[0]
        reach = (p - 0.5).abs().amax(-1).clamp(min=1e-9)
        level = torch.ceil(torch.log2(reach * 2.0)).clamp(0, cascades - 1).long()  # smallest cascade holding p
        q = (p - 0.5) * torch.pow(2.0, -level.float())[:, None] + 0.5
        ijk = (q * 128).long().clamp(0, 127)
        cells = morton3(ijk[:, 0], ijk[:, 1], ijk[:, 2])
        return outside | ~(grid[level, cells] > self.grid_threshold)

    def render(self, rays: Any, background: Tensor | None = None, perturb: bool = False,
               generator: torch.Generator | None = None, window: int | None = None) -> RenderOutputs:
        return render_volumetric(self, rays, self.config.volume_step, background, perturb, generator, window)


def per_level_scale_from(aabb_scale: float, levels: int, base_resolution: int) -> float:
    """Instant-NGP's growth factor when the snapshot does not store it: the finest level reaches
    2048 cells per unit of the box times ``aabb_scale`` (src/testbed.cu, ``reset_network``)."""
    return math.exp(math.log(2048.0 * aabb_scale / base_resolution) / max(levels - 1, 1))
