"""Active learning on three levels (PVD-AL): which poses, rays and points the student learns from.

* poses: a pool of views in play; every refresh, perturbed copies of the views whose rays the
  student rendered worst replace part of the pool (ranked by the views actually rendered, with
  their own ray errors), the rest are fresh random poses;
* rays: a pool of the highest-error rays seen so far in the current stage, mixed into every batch
  (by their samples: in place of as many samples of fresh rays);
* points: point losses only on the highest-weight samples of rays that are opaque enough.

Each level can be switched off (``ActiveConfig``); with all three off the student sees
uniformly random views, rays and samples. Every piece of state is a tensor so that a resumed
run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from radistill.cameras import Rays
from radistill.errors import ConfigError
from radistill.rng import uniform


@dataclass
class ActiveConfig:
    """Active learning options (each level can be switched off for ablation)."""

    poses: bool = True
    """Re-visit perturbed copies of the views with the lowest PSNR."""
    rays: bool = True
    """Mix a pool of the highest-error rays into every batch."""
    points: bool = True
    """Point losses only on the top-weight samples of opaque-enough rays."""
    view_pool: int = 64
    """Views in play at any time."""
    refresh_every: int = 25
    """Steps between refreshes of the view pool."""
    hard_view_fraction: float = 0.25
    """Share of the view pool given to perturbed copies of the worst views."""
    ray_pool: int = 4096
    """Capacity of the hard-ray pool."""
    hard_ray_fraction: float = 0.25
    """Share of each batch taken from the hard-ray pool, counted in samples: as many pool rays as
    fit in the samples this share of fresh rays would take (hard rays often take several times
    more), so a step costs about the same with the level on or off."""
    top_k: int = 8
    """Samples per ray kept for point losses (the highest teacher weights)."""
    opaque_threshold: float = 0.1
    """Rays whose teacher opacity is at most this get no point losses."""
    random_point_fraction: float = 0.05
    """Share of the other samples kept anyway, so that empty-looking space is supervised too."""

    def __post_init__(self) -> None:
        for name in ("view_pool", "refresh_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


class ViewPool:
    """The views in play, with the squared error of the rays rendered from each."""

    def __init__(self, teacher, size: int, generator: torch.Generator) -> None:
        self.teacher = teacher
        self.c2w = teacher.sample_poses(size, generator)  # [V, 4, 4]
        self.error = torch.zeros(size)  # [V] summed squared error of its rays
        self.count = torch.zeros(size)  # [V] rays rendered

    def sample_rays(self, n: int, generator: torch.Generator) -> tuple[Rays, Tensor]:
        """``n`` rays through random points of random pool views, and the view of each.  # Rays, [n]"""
        cams = self.teacher.views(self.c2w)
        view = torch.randint(len(cams), (n,), generator=generator)
        px = torch.rand(n, generator=generator) * cams.width
        py = torch.rand(n, generator=generator) * cams.height
        return cams.rays_for_pixels(view, px, py), view

    def sample_pixels(self, n: int, generator: torch.Generator) -> tuple[Rays, Tensor, Tensor, Tensor]:
        """``n`` rays through the centres of random pixels of random pool views: the rays, and
        the view, column and row of each (to look up a render of the view).  # Rays, [n] x 3"""
        cams = self.teacher.views(self.c2w)
        view = torch.randint(len(cams), (n,), generator=generator)
        px = torch.randint(cams.width, (n,), generator=generator)
        py = torch.randint(cams.height, (n,), generator=generator)
        return cams.rays_for_pixels(view, px.float() + 0.5, py.float() + 0.5), view, px, py

    def record(self, view: Tensor, ray_error: Tensor) -> None:
        """Add the errors of rendered rays (view -1: not from the pool) to their views."""
        keep = view >= 0
        self.error.index_add_(0, view[keep], ray_error[keep].detach().float())
        self.count.index_add_(0, view[keep], torch.ones_like(ray_error[keep]).float())

    def psnr(self) -> Tensor:
        """PSNR of each view over its rendered rays (NaN for views not rendered yet).  # [V]"""
        mse = self.error / self.count
        return -10 * torch.log10(mse.clamp_min(1e-10))

    def refresh(self, generator: torch.Generator, hard_fraction: float) -> None:
        """New views: perturbed copies of the worst-rendered ones (``hard_fraction``), fresh ones for the rest."""
        size = self.c2w.shape[0]
        fresh = self.teacher.sample_poses(size, generator)
        n_hard = int(round(hard_fraction * size))
        seen = self.count > 0
        if n_hard > 0 and bool(seen.any()):
            psnr = torch.where(seen, self.psnr(), torch.full_like(self.error, float("inf")))
            worst = torch.argsort(psnr)[:min(n_hard, int(seen.sum()))]
            fresh[:worst.numel()] = self.teacher.perturb_poses(self.c2w[worst], generator)
        self.c2w = fresh
        self.error.zero_()
        self.count.zero_()

    def replace(self, generator: torch.Generator, n: int, hard_fraction: float) -> Tensor:
        """Replace ``n`` random views and return their slots.  # [n]

        ``hard_fraction`` of the new views (rounded at random, so that a small ``n`` gets its
        share on average) are perturbed copies of the worst-rendered views seen so far, the rest
        fresh random poses: the share of copies in the pool stays about ``hard_fraction``, as
        after a ``refresh``. For students that cache what each view costs to make (the
        teacher's render of it), this keeps most of the pool, where ``refresh`` renews all of it.

        Copies of the worst views once took the places of the best ones. Renewal after renewal
        the pool then filled with copies of a few hard views, and a Gaussian student fitted those
        at the cost of every other view (lego, hashgrid -> gaussians, 10 CPU minutes: 31.30 dB
        held-out, against 32.63 with fresh random views only).
        """
        size = self.c2w.shape[0]
        slots = torch.randperm(size, generator=generator)[:n]
        new = self.teacher.sample_poses(n, generator)
        share = hard_fraction * n
        n_hard = int(share) + int(float(torch.rand((), generator=generator)) < share - int(share))
        seen = self.count > 0
        n_hard = min(n_hard, int(seen.sum()))
        if n_hard > 0:
            worst = torch.argsort(torch.where(seen, self.psnr(), torch.full_like(self.error, float("inf"))))[:n_hard]
            new[:n_hard] = self.teacher.perturb_poses(self.c2w[worst], generator)
        self.c2w[slots] = new
        self.error[slots] = 0.0
        self.count[slots] = 0.0
        return slots

    def state(self) -> dict[str, Tensor]:
        return {"c2w": self.c2w, "error": self.error, "count": self.count}

    def load(self, state: dict[str, Tensor]) -> None:
        self.c2w, self.error, self.count = state["c2w"].clone(), state["error"].clone(), state["count"].clone()


class HardRayPool:
    """The highest-error rays seen so far (re-scored whenever they are rendered again), with
    the target colour each came with (kept for teachers whose colours come from cached renders)
    and the samples each took when last marched.

    Hard rays tend to cross the object and take several times the samples of a random ray, so
    they are mixed into a batch by samples, not by count: ``take`` with a ``budget`` stops
    before the rays taken exceed it, and ``fresh_samples`` (a running mean over the fresh rays
    of each batch) is what a random ray costs. A batch with the hard-ray level on then marches
    about as many samples as one without (fewer rays), and a step costs about the same.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rays = torch.zeros(0, 11)  # [P, 11]: origins, directions, viewdirs, near, far
        self.rgb = torch.zeros(0, 3)  # [P, 3] target colour
        self.error = torch.zeros(0)  # [P]
        self.samples = torch.zeros(0)  # [P] samples of each ray when it was last marched
        self.fresh_samples = torch.tensor(float("nan"))  # running mean of a fresh ray's samples (NaN: none seen)

    def __len__(self) -> int:
        return self.rays.shape[0]

    def take(self, n: int, generator: torch.Generator, budget: float | None = None) -> tuple[Rays, Tensor, Tensor]:
        """Up to ``n`` random pool rays, their slots in the pool and their target colours; with a
        ``budget``, only as many of them as fit in that many samples.  # Rays, [k], [k, 3]"""
        slots = torch.randint(len(self), (n,), generator=generator) if n > 0 and len(self) else torch.zeros(0, dtype=torch.long)
        if budget is not None and slots.numel():
            slots = slots[:int((torch.cumsum(self.samples[slots], 0) <= budget).sum())]
        return _unpack(self.rays[slots]), slots, self.rgb[slots]

    def budget(self, n: int) -> float | None:
        """The samples ``n`` fresh rays would take (None before any were seen)."""
        fresh = float(self.fresh_samples)
        return None if math.isnan(fresh) else n * fresh

    def update(self, rays: Rays, error: Tensor, slots: Tensor, rgb: Tensor | None = None,
               samples: Tensor | None = None) -> None:
        """Re-score the pool rays just rendered (the first ``len(slots)`` of ``rays``), offer the
        others (with their target colours ``rgb`` [R, 3], if any), and keep the ``capacity``
        highest errors. ``samples`` [R]: the samples each ray took (none given: one each)."""
        error = error.detach().float()
        samples = torch.ones(len(rays)) if samples is None else samples.detach().float().cpu()
        n_old = slots.numel()
        pool_error, pool_samples = self.error.clone(), self.samples.clone()
        if n_old:
            pool_error[slots] = error[:n_old]
            pool_samples[slots] = samples[:n_old]
        if len(rays) > n_old:
            mean = samples[n_old:].mean()
            seen = not math.isnan(float(self.fresh_samples))
            self.fresh_samples = 0.9 * self.fresh_samples + 0.1 * mean if seen else mean
        new_rgb = torch.zeros(len(rays) - n_old, 3) if rgb is None else rgb[n_old:].detach().float().cpu()
        candidates = torch.cat([self.rays, _pack(rays[n_old:])])
        colours = torch.cat([self.rgb, new_rgb])
        counts = torch.cat([pool_samples, samples[n_old:]])
        scores = torch.cat([pool_error, error[n_old:]])
        k = min(self.capacity, scores.numel())
        top = torch.topk(scores, k).indices
        self.rays, self.rgb, self.error, self.samples = candidates[top], colours[top], scores[top], counts[top]

    def state(self) -> dict[str, Tensor]:
        return {"rays": self.rays, "rgb": self.rgb, "error": self.error, "samples": self.samples,
                "fresh_samples": self.fresh_samples}

    def load(self, state: dict[str, Tensor]) -> None:
        self.rays, self.error = state["rays"].clone(), state["error"].clone()
        self.rgb = state["rgb"].clone() if "rgb" in state else torch.zeros(len(self.rays), 3)
        # checkpoints from before sample counts: every ray costs one, as it did then
        self.samples = state["samples"].clone() if "samples" in state else torch.ones(len(self.rays))
        self.fresh_samples = state["fresh_samples"].clone() if "fresh_samples" in state else torch.tensor(float("nan"))


def _pack(rays: Rays) -> Tensor:  # [R, 11]
    return torch.cat([rays.origins, rays.directions, rays.viewdirs, rays.near[:, None], rays.far[:, None]], -1).cpu()


def _unpack(packed: Tensor) -> Rays:
    return Rays(packed[:, 0:3], packed[:, 3:6], packed[:, 6:9], packed[:, 9], packed[:, 10])


def select_points(weights: Tensor, ray_ids: Tensor, opacity: Tensor, top_k: int, opaque_threshold: float,
                  random_fraction: float, generator: torch.Generator) -> Tensor:
    """Indices of the samples that get point losses.

    Args:
        weights: the teacher's compositing weight of each packed sample.  # [M]
        ray_ids: the ray of each sample.  # [M]
        opacity: the teacher's opacity of each ray.  # [R]
        top_k: samples per ray kept, highest weights first.
        opaque_threshold: rays at or below this opacity keep none.
        random_fraction: share of the remaining samples kept at random.
    Returns:
        sorted sample indices.  # [P] long
    """
    m = weights.numel()
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    by_weight = torch.argsort(weights, descending=True, stable=True)
    order = by_weight[torch.argsort(ray_ids[by_weight], stable=True)]  # grouped by ray, heaviest first
    sorted_rays = ray_ids[order]
    first = torch.searchsorted(sorted_rays, sorted_rays, side="left")
    rank = torch.arange(m, device=weights.device) - first
    keep = torch.zeros(m, dtype=torch.bool, device=weights.device)
    keep[order] = (rank < top_k) & (opacity[sorted_rays] > opaque_threshold) & (weights[order] > 0)
    if random_fraction > 0:
        keep |= uniform((m,), generator, weights.device) < random_fraction
    return keep.nonzero()[:, 0]
