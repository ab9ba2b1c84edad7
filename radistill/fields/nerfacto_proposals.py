"""How nerfstudio renders a nerfacto run: its proposal sampler, in evaluation mode.

nerfacto does not march its field densely. Each ray (from 0 to nerfacto's ``far_plane``, in
nerfstudio's frame) is sampled in rounds (nerfstudio 1.1:
model_components/ray_samplers.py, fields/density_fields.py, cameras/rays.py,
model_components/scene_colliders.py; outside training the near plane is 0):

1. bins spaced linearly up to distance 1 and in disparity beyond (``spacing(t) = t / 2`` below
   1, ``1 - 1 / (2 t)`` above), one bin per proposal sample of the first round;
2. each round evaluates a proposal density field (a small hash grid and MLP, in the same
   contracted space as the field) at its bin centres, turns it into weights
   (``alpha = 1 - exp(-sigma delta)`` times the transmittance), pads the weights by 0.01,
   and places the next round's ``n + 1`` bin edges where the cumulative weights cross
   ``(k + 1/2) / (n + 1)`` (evaluation mode: no jitter), interpolated in spacing units;
3. the last round's bins are where the field itself is evaluated and composited the same way.

A field trained through these few samples (48 per ray by default) is only right where they
fall: integrated densely, a lightly trained nerfacto renders hazier images than nerfstudio
shows. ``NerfactoField.render`` therefore uses this sampler when the run's proposal networks
are readable (the PyTorch build); the field's point answers (``query``) are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from radistill.fields.nerfacto import NerfstudioHashGrid, contract, mlp_layers, run_mlp

HISTOGRAM_PADDING = 0.01
"""Added to every proposal weight before the next round's bins are placed (nerfstudio's PDFSampler)."""
WEIGHT_EPS = 1e-5


class ProposalDensity(nn.Module):
    """One of nerfacto's proposal networks (``HashMLPDensityField``): density in nerfstudio's frame."""

    def __init__(self, grid: NerfstudioHashGrid, layers: list[tuple[Tensor, Tensor | None]],
                 average_init_density: float) -> None:
        super().__init__()
        self.grid = grid
        self.layers = mlp_layers(layers)
        self.average_init_density = average_init_density

    def forward(self, p: Tensor) -> Tensor:
        """Density at points ``p`` [N, 3] of nerfstudio's frame.  # [N]"""
        q = contract(p)
        inside = ((q > 0.0) & (q < 1.0)).all(-1)
        raw = run_mlp(self.layers, self.grid(q * inside[:, None]))[:, 0]
        return self.average_init_density * torch.exp(raw) * inside


@dataclass
class SamplerSettings:
    """The sampler options of a nerfacto run (its model config)."""

    proposal_samples: tuple[int, ...] = (256, 96)
    nerf_samples: int = 48
    near: float = 0.0
    """nerfacto's collider starts rays at ``near_plane`` in training only: it renders from 0."""
    far: float = 1000.0
    piecewise: bool = True
    """``proposal_initial_sampler``: piecewise linear-then-disparity spacing, or uniform."""


class ProposalSampler(nn.Module):
    """nerfacto's proposal sampling of rays given in nerfstudio's frame (unit directions)."""

    def __init__(self, networks: list[ProposalDensity], settings: SamplerSettings) -> None:
        super().__init__()
        if len(networks) != len(settings.proposal_samples):
            raise ValueError(f"{len(networks)} proposal networks for {len(settings.proposal_samples)} rounds")
        self.networks = nn.ModuleList(networks)
        self.settings = settings

    def spacing(self, t: Tensor) -> Tensor:
        if not self.settings.piecewise:
            return t
        return torch.where(t < 1, t / 2, 1 - 1 / (2 * t))

    def spacing_inverse(self, s: Tensor) -> Tensor:
        if not self.settings.piecewise:
            return s
        return torch.where(s < 0.5, 2 * s, 1 / (2 - 2 * s))

    def to_distance(self, s: Tensor) -> Tensor:
        """Normalised spacing in [0, 1] to distance along the ray.  # same shape"""
        near, far = (self.spacing(torch.tensor(v, dtype=s.dtype, device=s.device))
                     for v in (self.settings.near, self.settings.far))
        return self.spacing_inverse(s * far + (1 - s) * near)

    @torch.no_grad()
    def bins(self, origins: Tensor, directions: Tensor) -> Tensor:
        """Edges, in distance along each ray, of the bins the field is evaluated in.  # [R, nerf_samples + 1]"""
        n_rays = origins.shape[0]
        edges = torch.linspace(0.0, 1.0, self.settings.proposal_samples[0] + 1, device=origins.device)
        edges = edges.expand(n_rays, -1)
        for i, network in enumerate(self.networks):
            t = self.to_distance(edges)
            mid = (t[:, 1:] + t[:, :-1]) / 2
            sigma = network((origins[:, None, :] + directions[:, None, :] * mid[..., None]).reshape(-1, 3))
            weights = ray_weights(sigma.view_as(mid), t[:, 1:] - t[:, :-1])
            n_next = self.settings.proposal_samples[i + 1] if i + 1 < len(self.networks) else self.settings.nerf_samples
            edges = resample(edges, weights, n_next)
        return self.to_distance(edges)


def ray_weights(sigma: Tensor, deltas: Tensor) -> Tensor:
    """nerfstudio's ``get_weights``: alpha times the transmittance before each sample.  # [R, S]"""
    dd = deltas * sigma
    alpha = 1 - torch.exp(-dd)
    before = torch.cat([torch.zeros_like(dd[:, :1]), torch.cumsum(dd[:, :-1], -1)], -1)
    return torch.nan_to_num(alpha * torch.exp(-before))


def resample(edges: Tensor, weights: Tensor, n: int) -> Tensor:
    """The ``n + 1`` bin edges (in spacing units) where the padded cumulative weights cross
    ``(k + 1/2) / (n + 1)``: nerfstudio's PDFSampler in evaluation mode, without the original
    edges.  # [R, n + 1]"""
    w = weights + HISTOGRAM_PADDING
    total = w.sum(-1, keepdim=True)
    pad = torch.relu(WEIGHT_EPS - total)
    w = w + pad / w.shape[-1]
    total = total + pad
    cdf = torch.minimum(torch.ones_like(w), torch.cumsum(w / total, -1))
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    count = n + 1
    u = (torch.linspace(0.0, 1.0 - 1.0 / count, count, device=edges.device) + 1.0 / (2 * count)).expand(edges.shape[0], -1)
    index = torch.searchsorted(cdf, u.contiguous(), right=True)
    below = (index - 1).clamp(0, edges.shape[-1] - 1)
    above = index.clamp(0, edges.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, below), cdf.gather(-1, above)
    e0, e1 = edges.gather(-1, below), edges.gather(-1, above)
    frac = torch.clip(torch.nan_to_num((u - c0) / (c1 - c0), 0), 0, 1)
    return e0 + frac * (e1 - e0)
