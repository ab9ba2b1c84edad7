"""nerfstudio's ``nerfacto`` field (its PyTorch and tiny-cuda-nn builds), as a teacher.

The arithmetic of nerfstudio 1.1 (fields/nerfacto_field.py, field_components/encodings.py,
field_components/spatial_distortions.py, field_components/mlp.py, utils/math.py):

* a world point ``p`` is ``scale * (R p + t)`` in nerfstudio's frame (dataparser_transforms.json);
  there the L-infinity scene contraction maps it into [-2, 2]^3 (``(2 - 1/m) x/m`` where
  ``m = max|x| >= 1``), and ``(x + 2) / 4`` into [0, 1]^3; points not strictly inside are zeroed;
* the PyTorch build's hash grid differs from tiny-cuda-nn's (which the tiny-cuda-nn build
  uses, with ``per_level_scale = g``): level ``l`` scales by ``floor(min_res * g^l)``
  with no half-cell offset, every level is hashed (``x * 1 ^ y * 2654435761 ^ z * 805459861`` in
  64-bit integers, modulo the table size, plus ``l`` table sizes), and corners are the floor
  and ceiling of the scaled point;
* density ``average_init_density * exp(h[0])`` from the base MLP's 16 outputs (ReLU hidden
  layers, no output activation); nerfstudio integrates it over its own lengths, so the world
  density is ``scale`` times it;
* colour ``sigmoid(head([SH((d + 1) / 2), h[1:], appearance]))``: nerfstudio's SH polynomial
  (without tiny-cuda-nn's signs) of the direction mapped to [0, 1]^3, and the mean appearance
  embedding, as nerfacto renders when no training image is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from radistill.cameras import Similarity
from radistill.fields.base import FieldOutputs, RenderOutputs, Representation, render_volumetric
from radistill.fields.hashgrid import HashEncoding
from radistill.fields.sh import sh_basis
from radistill.render.occupancy import OccupancyGrid

PRIMES = (1, 2654435761, 805459861)
OCCUPANCY_RESOLUTION = 128
SKIP_ALPHA = 1e-3
PROPOSAL_PASS_SAMPLES = 1 << 17
"""Samples of the densest proposal round in one pass of ``render``: more rays than that are
rendered in passes. The hash encoding of a pass holds 8 corner rows and weights per level and
sample, so one pass over 8192 rays of 64 proposal samples (the CI's small run) peaked 690 MB above
the loaded run and took 1.7 s per 100x100 view, passes of 2048 rays 100 MB and 1.4 s; nerfacto's
default 256 proposal samples would take four times that memory per ray."""
"""Cells whose density gives less than this opacity over one marching step are skipped."""
# nerfstudio's corner order (pytorch_fwd): (x, y, z) each from the ceiling (1) or floor (0)
CORNERS = ((1, 1, 1), (1, 0, 1), (0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0), (0, 0, 0), (0, 1, 0))


def nerfstudio_sh(v: Tensor) -> Tensor:
    """nerfstudio's 16 SH components (``components_from_spherical_harmonics``, 4 levels) of ``v``.  # [N, 16]"""
    x, y, z = v.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814), 0.4886025119029199 * y, 0.4886025119029199 * z,
        0.4886025119029199 * x, 1.0925484305920792 * x * y, 1.0925484305920792 * y * z,
        0.9461746957575601 * zz - 0.31539156525251999, 1.0925484305920792 * x * z, 0.5462742152960396 * (xx - yy),
        0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z, 0.4570457994644658 * y * (5 * zz - 1),
        0.3731763325901154 * z * (5 * zz - 3), 0.4570457994644658 * x * (5 * zz - 1),
        1.445305721320277 * z * (xx - yy), 0.5900435899266435 * x * (xx - 3 * yy)], -1)


class NerfstudioHashGrid(nn.Module):
    """nerfstudio's PyTorch hash encoding (``HashEncoding.pytorch_fwd``) with a trained table.

    Every level is hashed, at ``floor(min_res * g^l)`` cells (nerfstudio's own float64 growth
    ``g``: at 16 levels from 16 to 2048 the last level scales by 2047, not 2048).
    """

    def __init__(self, table: Tensor, levels: int, log2_table: int, min_res: int, max_res: int) -> None:
        super().__init__()
        self.log2_table = log2_table
        self.register_buffer("table", table.float())
        growth = self.growth(levels, min_res, max_res)
        self.register_buffer("scalings", torch.floor(min_res * growth ** torch.arange(levels)).float())

    @staticmethod
    def growth(levels: int, min_res: int, max_res: int) -> float:
        """nerfstudio's per-level growth, computed as it does (numpy float64)."""
        return float(np.exp((np.log(max_res) - np.log(min_res)) / (levels - 1))) if levels > 1 else 1.0

    def _axis_hashes(self, corner: Tensor) -> list[Tensor]:  # [N, L, 3] float -> 3 x [N, L] int32
        """Each axis's term of nerfstudio's hash at integer corners ``corner``, already reduced
        modulo the table size: the table size is a power of two, so ``(a ^ b ^ c) % size`` is
        ``(a & m) ^ (b & m) ^ (c & m)`` with ``m = size - 1``, and the int64 products (as
        nerfstudio computes them) are taken once per axis rather than once per corner."""
        mask = (1 << self.log2_table) - 1
        terms = (corner.to(torch.int64) * torch.tensor(PRIMES, device=corner.device)) & mask
        return list(terms.to(torch.int32).unbind(-1))

    def forward(self, q: Tensor) -> Tensor:
        """Features of points in [0, 1]^3.  # [N, L * F]"""
        n, levels, size = q.shape[0], self.scalings.shape[0], 1 << self.log2_table
        scaled = q[:, None, :] * self.scalings[:, None]  # [N, L, 3]
        floor = torch.floor(scaled)
        off = scaled - floor
        terms = list(zip(self._axis_hashes(floor), self._axis_hashes(torch.ceil(scaled))))  # per axis: (floor, ceil)
        level_rows = torch.arange(levels, dtype=torch.int32, device=q.device) * size
        rows = torch.stack([terms[0][cx] ^ terms[1][cy] ^ terms[2][cz] for cx, cy, cz in CORNERS]) + level_rows
        f = self.table.index_select(0, rows.flatten()).view(len(CORNERS), n, levels, -1)  # one gather
        ox, oy, oz = off[..., 0:1], off[..., 1:2], off[..., 2:3]
        f03, f12 = f[0] * ox + f[3] * (1 - ox), f[1] * ox + f[2] * (1 - ox)
        f56, f47 = f[5] * ox + f[6] * (1 - ox), f[4] * ox + f[7] * (1 - ox)
        f0312, f4756 = f03 * oy + f12 * (1 - oy), f47 * oy + f56 * (1 - oy)
        return (f0312 * oz + f4756 * (1 - oz)).flatten(1)


def mlp_layers(layers: list[tuple[Tensor, Tensor | None]]) -> nn.ModuleList:
    """Frozen linear layers holding the given weights and biases."""
    out = nn.ModuleList()
    for w, b in layers:
        layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        layer.weight.data.copy_(w)
        if b is not None:
            layer.bias.data.copy_(b)
        layer.requires_grad_(False)
        out.append(layer)
    return out


def run_mlp(layers: Any, h: Tensor) -> Tensor:
    """nerfstudio's MLP: ReLU hidden layers, no output activation; inputs zero-padded to the
    first layer's width (tiny-cuda-nn pads)."""
    if h.shape[1] < layers[0].in_features:
        h = torch.nn.functional.pad(h, (0, layers[0].in_features - h.shape[1]))
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def contract(x: Tensor) -> Tensor:
    """nerfstudio's L-infinity scene contraction, then ``(x + 2) / 4``.  # [N, 3]"""
    mag = x.abs().amax(-1, keepdim=True)
    return (torch.where(mag < 1, x, (2 - 1 / mag) * (x / mag)) + 2.0) / 4.0


@dataclass
class NerfactoConfig:
    """What a nerfacto run says about its field (read, not chosen)."""

    levels: int = 16
    features: int = 2
    log2_table: int = 19
    min_res: int = 16
    max_res: int = 2048
    average_init_density: float = 1.0
    scale: float = 1.0
    rotation: list[list[float]] = field(default_factory=lambda: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    translation: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    encoding: str = "nerfstudio"
    """``nerfstudio`` (the PyTorch build's hash grid) or ``tcnn`` (tiny-cuda-nn's, as radistill's
    ``hashgrid``; its MLPs then have no biases and padded widths, and its SH has tcnn's signs)."""
    volume_step: int = 512
    box: float = 1.0
    """Half side of the scene box that the run's data parser declares, in nerfstudio's frame (1.5
    for NeRF Blender scenes, ``scene_scale`` for captures): the field's aabb. Beyond it, where
    the contraction squeezes the background, a student has nothing to hold it."""
    render_outside_box: bool = False
    """nerfstudio renders the contracted space beyond the box too (out to ``far_plane``: the
    background, and floaters). A student holds only the box, so by default the samples of
    nerfacto's sampler that fall outside it are left empty and the background shows there."""
    source: str = ""


class NerfactoField(Representation):
    """A nerfacto field read from a nerfstudio run by ``radistill.io.nerfstudio``."""

    kind = "nerfacto"
    Config = NerfactoConfig
    config: NerfactoConfig

    @property
    def volumetric_view_teaches(self) -> bool:
        """Whether students may learn its point answers. Not when it renders through nerfacto's
        proposal sampler: a field trained through those few samples can look quite different
        when integrated densely (on the 200-step lego run of the tests: 13 dB between the two,
        against 88 dB between this renderer and nerfstudio's), so students learn its renders."""
        return self.proposals is None

    def __init__(self, config: NerfactoConfig, hash_table: Tensor, base: list[tuple[Tensor, Tensor | None]],
                 head: list[tuple[Tensor, Tensor | None]], appearance: Tensor | None) -> None:
        rotation = torch.tensor(config.rotation, dtype=torch.float32)
        translation = torch.tensor(config.translation, dtype=torch.float32)
        corners = torch.tensor([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)])
        world = Similarity(rotation, translation, config.scale).inverse().points(config.box * corners)  # the scene box
        super().__init__(config, torch.stack([world.amin(0), world.amax(0)]))
        self.register_buffer("rotation", rotation)
        self.register_buffer("translation", translation)
        if config.encoding == "tcnn":  # tiny-cuda-nn's grid, which radistill's HashEncoding shares
            growth = NerfstudioHashGrid.growth(config.levels, config.min_res, config.max_res)
            self.grid = HashEncoding.from_table(hash_table, config.levels, config.log2_table, config.min_res, growth)
        else:  # the PyTorch build's own grid
            self.grid = NerfstudioHashGrid(hash_table, config.levels, config.log2_table, config.min_res, config.max_res)
        self.base = mlp_layers(base)
        self.head = mlp_layers(head)
        self.register_buffer("appearance", appearance)
        for p in self.parameters():
            p.requires_grad_(False)
        self.proposals: Any = None  # nerfacto's proposal sampler (``ProposalSampler``), when the run's is readable
        self._occupancy: OccupancyGrid | None = None  # derived from the density on first use, not saved

    def encode(self, q: Tensor) -> Tensor:
        """The hash encoding of points in [0, 1]^3.  # [N, L * F]"""
        return self.grid(q)

    @property
    def frame(self) -> Similarity:
        """The move from the world into nerfstudio's frame."""
        return Similarity(self.rotation, self.translation, self.config.scale)

    def to_nerfstudio(self, x: Tensor) -> Tensor:
        """World points in nerfstudio's frame.  # [N, 3]"""
        return self.frame.points(x)

    def _base(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The base MLP's outputs and the inside flag at world points.  # [N, 16], [N]"""
        q = contract(self.to_nerfstudio(x))
        inside = ((q > 0.0) & (q < 1.0)).all(-1)
        q = q * inside[:, None]
        return run_mlp(self.base, self.grid(q))[:, :16], inside

    @torch.no_grad()
    def density(self, x: Tensor) -> Tensor:
        h, inside = self._base(x)
        return self.config.average_init_density * torch.exp(h[:, 0]) * inside * self.config.scale

    @torch.no_grad()
    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        h, inside = self._base(x)
        sigma = self.config.average_init_density * torch.exp(h[:, 0]) * inside * self.config.scale
        d_ns = self.frame.directions(d)
        # both builds encode (d + 1) / 2; tiny-cuda-nn maps it back to d and uses its own signs
        sh = sh_basis(d_ns, 3) if self.config.encoding == "tcnn" else nerfstudio_sh((d_ns + 1.0) / 2.0)
        parts = [sh, h[:, 1:]]
        if self.appearance is not None:
            parts.append(self.appearance.expand(x.shape[0], -1))
        return FieldOutputs(sigma, torch.sigmoid(run_mlp(self.head, torch.cat(parts, -1))[:, :3]))

    def occupancy(self) -> OccupancyGrid:
        """Where the density is visible, sampled once on first use: 128^3 cells, two jittered
        samples each, dilated by one cell. The renderer skips the rest, as Instant-NGP's density
        grid does (nerfacto itself has proposal networks instead), and teachers report it empty."""
        device = self.aabb.device
        if self._occupancy is None or self._occupancy.aabb.device != device:
            grid = OccupancyGrid(self.aabb, OCCUPANCY_RESOLUTION).to(device)
            generator = torch.Generator().manual_seed(0)
            step = float((self.aabb[1] - self.aabb[0]).norm()) / self.config.volume_step
            for _ in range(2):
                grid.update(self.density, step, decay=1.0, threshold_alpha=SKIP_ALPHA, generator=generator)
            r = grid.resolution
            dilated = torch.nn.functional.max_pool3d(grid.occupied.view(1, 1, r, r, r).float(), 3, 1, 1)
            grid.occupied.copy_(dilated.view(-1) > 0)
            self._occupancy = grid
        return self._occupancy

    def empty_mask(self, x: Tensor) -> Tensor:
        return ~self.occupancy().is_occupied(x)

    def render(self, rays: Any, background: Tensor | None = None, perturb: bool = False,
               generator: torch.Generator | None = None, window: int | None = None) -> RenderOutputs:
        """What nerfstudio renders: its proposal sampling (``radistill.fields.nerfacto_proposals``)
        when the run's proposal networks were read, else dense marching of the field."""
        if self.proposals is not None:
            settings = self.proposals.settings
            per_pass = max(1, PROPOSAL_PASS_SAMPLES // max((*settings.proposal_samples, settings.nerf_samples)))
            if len(rays) <= per_pass:
                return self._render_proposals(rays, background)
            return _concatenate([self._render_proposals(rays[i:i + per_pass], background)
                                 for i in range(0, len(rays), per_pass)])
        return render_volumetric(self, rays, self.config.volume_step, background, perturb, generator, window,
                                 self.occupancy())

    @torch.no_grad()
    def _render_proposals(self, rays: Any, background: Tensor | None) -> RenderOutputs:
        """Composite the field at the bins of nerfacto's proposal sampler (rays in the world)."""
        origins, dirs = rays.origins, rays.viewdirs
        # distances along a ray in nerfstudio's frame are ``scale`` times the world's
        edges = self.proposals.bins(self.to_nerfstudio(origins), self.frame.directions(dirs)) / self.config.scale
        mid = (edges[:, 1:] + edges[:, :-1]) / 2  # [R, S]
        n_rays, n = mid.shape
        positions = (origins[:, None, :] + dirs[:, None, :] * mid[..., None]).reshape(-1, 3)
        out = self.query(positions, dirs[:, None, :].expand(-1, n, -1).reshape(-1, 3))
        sigma = out.sigma
        if not self.config.render_outside_box:
            sigma = sigma * ((positions >= self.aabb[0]) & (positions <= self.aabb[1])).all(-1)
        from radistill.fields.nerfacto_proposals import ray_weights

        weights = ray_weights(sigma.view(n_rays, n), edges[:, 1:] - edges[:, :-1])
        opacity = weights.sum(-1)
        rgb = (weights[..., None] * out.rgb.view(n_rays, n, 3)).sum(1)
        if background is not None:
            rgb = rgb + (1 - opacity)[:, None] * background.to(rgb)
        ray_ids = torch.arange(n_rays, device=mid.device).repeat_interleave(n)
        return RenderOutputs(rgb, (weights * mid).sum(-1), opacity, weights.reshape(-1), ray_ids, positions,
                             positions.shape[0])


def _concatenate(passes: list[RenderOutputs]) -> RenderOutputs:
    """The renders of consecutive groups of rays as one render (sample ray ids offset)."""
    ray_ids, first = [], 0
    for p in passes:
        ray_ids.append(p.ray_ids + first)
        first += len(p.rgb)
    return RenderOutputs(torch.cat([p.rgb for p in passes]), torch.cat([p.depth for p in passes]),
                         torch.cat([p.opacity for p in passes]), torch.cat([p.weights for p in passes]),
                         torch.cat(ray_ids), torch.cat([p.positions for p in passes]), sum(p.n_samples for p in passes))
