"""3D Gaussians as a representation (``gaussians``).

Parameters are stored pre-activation, as 3DGS stores them: centres, wxyz quaternions,
log-scales, logit opacities and SH colour coefficients (degree 0-3; ``sh0`` is the DC term).

* ``render_image`` rasterises (``radistill.render.splat``: gsplat on CUDA when installed, the
  PyTorch reference elsewhere); ``render(rays)`` volume-renders the volumetric view below, for
  callers that need arbitrary rays.
* ``query`` is the volumetric view (``gaussian_volume``), so Gaussians can teach neural
  students at the point level.
* ``from_teacher`` seeds Gaussians where a teacher's render weights are high, with the
  teacher's colour and a scale from the spacing of the seeds; the distill engine then fits
  them to the teacher's renders, densifying and pruning as 3DGS does (``on_train_step``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from radistill.errors import ConfigError
from radistill.fields.base import FieldOutputs, RenderOutputs, Representation, render_volumetric
from radistill.fields.gaussian_volume import GaussianVolume
from radistill.fields.sh import C0, sh_basis
from radistill.render.splat import Camera, rasterize


@dataclass
class GaussiansConfig:
    """Options of a Gaussian scene: its SH degree, the rasteriser, and 3DGS's optimisation.

    The measurements quoted below for the seeds, learning rates and growth threshold were made
    with ``eps2d`` 0.3 (its default then), against a 32.48 dB hashgrid teacher."""

    sh_degree: int = 3
    """Degree of the SH colour (0-3)."""
    initial_gaussians: int = 50000
    """Gaussians seeded from a teacher (``from_teacher``). Measured on lego (hashgrid teacher,
    2 CPU minutes): 20,000 -> 27.85 dB held-out, 50,000 -> 28.46 dB; 10 CPU minutes: 50,000 ->
    30.80 dB, 100,000 -> 30.46 (steps dearer: 1,485 against 2,302)."""
    initial_opacity: float = 0.5
    """Opacity of the seeded Gaussians."""
    initial_scale_cap: float = 1.5
    """A seeded Gaussian's scale (the distance to its three nearest seeds) is at most this many
    times the median one: a seed far from the others (a surface few rays saw, a stray opaque
    ray) would otherwise start as a blob over much of the scene. Measured on four briefly
    trained nerfacto runs (5000 seeds asked for, 2000-2700 found, the widest 15x the median):
    the seeded Gaussians render 18.7-20.4 dB against the teacher uncapped, 21.3-23.1 dB capped;
    after 40 steps 24.1-27.7 dB uncapped, 26.3-28.3 dB capped (2x: 26.0-28.1). No change on
    lego's hashgrid teacher (50,000 seeds)."""
    backend: str = "auto"
    """Rasteriser: ``auto`` (gsplat on CUDA when installed, else torch), ``torch`` or ``gsplat``."""
    near: float = 0.01
    """Gaussians closer to the camera than this are not drawn."""
    eps2d: float = 0.1
    """Pixel variance added to every projected Gaussian (an anti-aliasing low-pass). 3DGS,
    gsplat and splatfacto use 0.3, and scenes read from their files keep it (``from_params``
    without a config); what radistill fits uses 0.1, about a one-pixel box filter (variance
    1/12, Mip-Splatting's choice): 0.3 blurs every edge by more than a pixel of a photo does,
    which caps how closely a scene fitted at low resolution can match its teacher. Measured on
    lego (hashgrid teacher, 32.79 dB held-out, 2 CPU minutes, seed 0): 0.3 -> 29.14 dB
    held-out, 0.15 -> 30.28, 0.1 -> 30.68, 0.05 -> 30.74, 0.02 -> 30.27 (seed 1: 0.3 -> 29.36,
    0.1 -> 31.17)."""
    volume_step: int = 256
    """Samples along the aabb diagonal when rays are volume-rendered (``render``)."""
    volume_blur: float = 1.0
    """The volumetric view widens every Gaussian to at least this many volume steps (a 3D
    low-pass, like the rasteriser's ``eps2d``): thin Gaussians would otherwise fall between
    the samples of a marcher and teach a speckled field. Measured on the donut, volume renders
    against rasterised ones: 25 dB without, 27 dB at 0.5, 39 dB at 1.0."""
    lr_means: float = 4e-4
    """Learning rate of the centres, times the scene radius. Centres, scales, DC colour and
    opacities learn 2.5x, 2x, 10x and 2x faster than in 3DGS, which suits runs of hundreds of
    steps rather than 30,000 (tuned on lego, hashgrid teacher, 2 CPU minutes: 28.95 dB held-out
    against 27.85 dB with 10x faster centres and 3DGS's colour and opacity rates)."""
    lr_scales: float = 1e-2
    lr_quats: float = 1e-3
    lr_opacities: float = 0.1
    lr_sh0: float = 2.5e-2
    lr_shN: float = 1.25e-4
    densify_every: int = 100
    """Steps between densification and pruning."""
    densify_start: float = 0.05
    """Densify from this fraction of the run..."""
    densify_stop: float = 0.6
    """...until this fraction."""
    grow_grad2d: float = 2e-4
    """Mean screen-space gradient (in half-image units, as gsplat) above which a Gaussian grows.
    Measured on lego (hashgrid teacher, 10 CPU minutes): 1e-4 -> 103k Gaussians, 29.89 dB
    held-out; 2e-4 -> 70k, 30.80 dB; 4e-4 -> 56k, 30.45 dB."""
    grow_scale: float = 0.01
    """Growing Gaussians smaller than this (times the scene radius) are cloned, larger ones split."""
    prune_opacity: float = 0.005
    """Gaussians below this opacity are removed."""
    prune_scale: float = 0.5
    """Gaussians larger than this (times the scene radius) are removed."""
    max_gaussians: int = 400000
    """Densification stops growing beyond this count."""

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(f"gaussians: sh_degree must be 0..3, got {self.sh_degree}")
        if self.backend not in ("auto", "torch", "gsplat"):
            raise ConfigError(f"gaussians: backend must be auto, torch or gsplat, got {self.backend!r}")
        if self.initial_gaussians < 1:
            raise ConfigError(f"gaussians: initial_gaussians must be positive, got {self.initial_gaussians}")
        if self.initial_scale_cap <= 0:
            raise ConfigError(f"gaussians: initial_scale_cap must be positive, got {self.initial_scale_cap}")
        if not 0 < self.initial_opacity < 1:
            raise ConfigError(f"gaussians: initial_opacity must be in (0, 1), got {self.initial_opacity}")


EPS2D_3DGS = 0.3
"""The low-pass of 3DGS, gsplat and splatfacto (and of web viewers): scenes they made are drawn with it."""

PARAMETERS = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")


class GaussiansField(Representation):
    """A set of 3D Gaussians; ``len(field)`` of them."""

    kind: ClassVar[str] = "gaussians"
    Config: ClassVar[type] = GaussiansConfig
    learns_from_images: ClassVar[bool] = True
    volumetric_view_teaches: ClassVar[bool] = False
    """As a teacher of neural students, its volumetric view is too far from its rasterised
    images to teach at the point level: students learn its renders only (``DistillObjective``)."""
    """As a distillation student it fits whole rendered images (no junction, no point losses)."""

    config: GaussiansConfig

    def __init__(self, config: GaussiansConfig, aabb: Tensor, n: int = 0) -> None:
        super().__init__(config, aabb)
        k = (config.sh_degree + 1) ** 2
        self.means = nn.Parameter(torch.zeros(n, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.log_scales = nn.Parameter(torch.full((n, 3), -5.0))
        self.logit_opacities = nn.Parameter(torch.zeros(n))
        self.sh0 = nn.Parameter(torch.zeros(n, 1, 3))
        self.shN = nn.Parameter(torch.zeros(n, k - 1, 3))
        self._volume: GaussianVolume | None = None
        self._volume_key: tuple | None = None
        # screen-space gradient norms accumulated since the last densification (saved: resume is exact)
        self.register_buffer("grad_sum", torch.zeros(n))
        self.register_buffer("grad_count", torch.zeros(n))
        self._index_map: Tensor | None = None  # after densification: old row of each new row (-1: new)

    # ------------------------------------------------------------------ parameters

    def __len__(self) -> int:
        return self.means.shape[0]

    @classmethod
    def from_params(cls, means: Tensor, quats: Tensor, log_scales: Tensor, logit_opacities: Tensor, sh: Tensor,
                    aabb: Tensor | None = None, config: GaussiansConfig | None = None) -> "GaussiansField":
        """A field holding the given pre-activation parameters (``sh`` [N, K, 3]; K fixes the
        degree unless ``config`` gives one, in which case coefficients are cut or zero-padded).
        Without ``aabb`` the bounds come from the centres (``bounds_of``). Without ``config``
        (a scene made elsewhere: a PLY, a .splat, splatfacto) it is drawn as 3DGS drew it while
        fitting it, with ``eps2d`` 0.3."""
        degree = round(math.sqrt(sh.shape[1])) - 1
        config = config or GaussiansConfig(sh_degree=degree, eps2d=EPS2D_3DGS)
        field = cls(config, bounds_of(means) if aabb is None else aabb, n=means.shape[0])
        k = (config.sh_degree + 1) ** 2
        sh = sh[:, :k] if sh.shape[1] >= k else torch.cat([sh, sh.new_zeros(sh.shape[0], k - sh.shape[1], 3)], 1)
        with torch.no_grad():
            field.means.copy_(means)
            field.quats.copy_(quats)
            field.log_scales.copy_(log_scales)
            field.logit_opacities.copy_(logit_opacities)
            field.sh0.copy_(sh[:, :1])
            field.shN.copy_(sh[:, 1:])
        return field

    @property
    def sh(self) -> Tensor:
        """All SH coefficients.  # [N, K, 3]"""
        return torch.cat([self.sh0, self.shN], 1)

    @property
    def scales(self) -> Tensor:  # [N, 3]
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:  # [N]
        return torch.sigmoid(self.logit_opacities)

    @property
    def scene_radius(self) -> float:
        return 0.5 * float((self.aabb[1] - self.aabb[0]).norm())

    def prepare_state(self, state: dict[str, Tensor]) -> None:
        """Resize the parameters to the saved number of Gaussians before loading (a file without
        the densification statistics gets zeros: they only matter while training)."""
        n = state["means"].shape[0] if "means" in state else len(self)
        for name in ("grad_sum", "grad_count"):
            state.setdefault(name, torch.zeros(n))
        if n != len(self):
            self._replace_rows(torch.zeros(n, dtype=torch.long, device=self.means.device),
                               {k: torch.zeros(v.shape, dtype=v.dtype, device=self.means.device)
                                for k, v in state.items() if k in PARAMETERS})

    def _replace_rows(self, rows: Tensor, fresh: dict[str, Tensor] | None = None) -> None:
        """Rebuild every parameter as ``old[rows]``, overwritten by ``fresh`` where given."""
        for name in PARAMETERS:
            if fresh is not None and name in fresh:
                value = fresh[name]
            else:
                value = getattr(self, name).detach()[rows]
            setattr(self, name, nn.Parameter(value.contiguous()))
        self.grad_sum = torch.zeros(rows.numel(), device=self.means.device)
        self.grad_count = torch.zeros(rows.numel(), device=self.means.device)
        self._volume = None

    # ------------------------------------------------------------------ the volumetric view

    def volume_log_scales(self) -> Tensor:
        """Log-scales of the volumetric view: ``sqrt(s^2 + b^2)``, ``b`` = ``volume_blur`` steps.  # [N, 3]"""
        blur = self.config.volume_blur * float((self.aabb[1] - self.aabb[0]).norm()) / self.config.volume_step
        return 0.5 * torch.log(torch.exp(2 * self.log_scales) + blur**2)

    def volume(self) -> GaussianVolume:
        """The spatial index of the current Gaussians (rebuilt when a parameter changed)."""
        key = tuple((p._version, p.data_ptr(), p.shape[0]) for p in (self.means, self.quats, self.log_scales))
        if self._volume is None or self._volume_key != key:
            scales = torch.exp(self.volume_log_scales().detach())
            self._volume = GaussianVolume.build(self.means.detach(), self.quats.detach(), scales, self.aabb)
            self._volume_key = key
        return self._volume

    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        """Density and colour at ``x`` [N, 3] seen along ``d`` [N, 3] (see ``gaussian_volume``)."""
        sigma, rgb = self.volume().query(x, d, self.means, self.quats, self.volume_log_scales(), self.opacities, self.sh)
        return FieldOutputs(sigma, rgb)

    def density(self, x: Tensor) -> Tensor:
        """The largest density over view directions at ``x`` [N, 3] (what occupancy needs).  # [N]"""
        return self.volume().query(x, None, self.means, self.quats, self.volume_log_scales(), self.opacities, None)[0]

    def render(self, rays: Any, background: Tensor | None = None, perturb: bool = False,
               generator: torch.Generator | None = None, window: int | None = None) -> RenderOutputs:
        """Volume rendering of the volumetric view along arbitrary rays (images use ``render_image``)."""
        return render_volumetric(self, rays, self.config.volume_step, background, perturb, generator, window)

    # ------------------------------------------------------------------ rasterisation

    def colors(self, camera_center: Tensor) -> Tensor:
        """Colour of each Gaussian seen from ``camera_center`` [3], as 3DGS evaluates SH.  # [N, 3]"""
        dirs = self.means - camera_center
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis = sh_basis(dirs, self.config.sh_degree)  # [N, K]
        return ((basis[:, :, None] * self.sh).sum(1) + 0.5).clamp_min(0.0)

    def render_image(self, cameras: Any, index: int, background: Tensor | None = None,
                     chunk: int = 8192) -> dict[str, Tensor]:
        """Rasterise ``cameras[index]``: ``rgb`` [H, W, 3], ``depth``, ``opacity`` [H, W], and
        ``means2d`` [N, 2] whose gradient feeds densification during training."""
        camera = Camera.from_cameras(cameras, index)
        camera.c2w = camera.c2w.to(self.means.device)
        img = rasterize(self.means, self.quats, self.scales, self.opacities, self.colors(camera.c2w[:3, 3]), camera,
                        background, self.config.near, self.config.eps2d, self.config.backend)
        if self.training and img.means2d.requires_grad:
            self._watch_screen_gradients(img.means2d, img.radii, camera)
        return {"rgb": img.rgb, "depth": img.depth, "opacity": img.opacity, "means2d": img.means2d}

    def _watch_screen_gradients(self, means2d: Tensor, radii: Tensor, camera: Camera) -> None:
        """Accumulate the norm of each drawn Gaussian's screen-space gradient during backward."""
        drawn = (radii > 0).any(-1)
        scale = torch.tensor([0.5 * camera.width, 0.5 * camera.height], device=means2d.device)
        grad_sum, grad_count = self.grad_sum, self.grad_count

        def hook(grad: Tensor) -> None:
            grad = grad.reshape(-1, 2)
            if grad_sum.shape[0] != grad.shape[0]:
                return  # the parameters were replaced since this render
            norm = (grad * scale).norm(dim=-1).detach()
            grad_sum.add_(torch.where(drawn, norm, torch.zeros_like(norm)))
            grad_count.add_(drawn.float())

        means2d.register_hook(hook)

    # ------------------------------------------------------------------ densification

    def on_train_step(self, step: int, generator: torch.Generator | None = None, progress: float = 0.0) -> bool:
        cfg = self.config
        if step == 0 or step % cfg.densify_every or not cfg.densify_start <= progress <= cfg.densify_stop:
            return False
        self.densify_and_prune(generator)
        return True

    @torch.no_grad()
    def densify_and_prune(self, generator: torch.Generator | None = None) -> dict[str, int]:
        """3DGS's adaptive density control: clone small Gaussians with large screen-space
        gradients, split large ones in two, remove transparent and oversized ones."""
        cfg = self.config
        n = len(self)
        device = self.means.device
        grads = self.grad_sum / self.grad_count.clamp_min(1)
        max_scale = self.scales.amax(-1)
        radius = self.scene_radius
        grow = (grads > cfg.grow_grad2d) & (self.grad_count > 0)
        room = max(cfg.max_gaussians - n, 0)
        if int(grow.sum()) > room:  # keep the largest gradients
            keep = torch.topk(torch.where(grow, grads, torch.full_like(grads, -1.0)), room).indices
            grow = torch.zeros_like(grow)
            grow[keep] = True
        clone = grow & (max_scale <= cfg.grow_scale * radius)
        split = grow & ~clone
        prune = (self.opacities < cfg.prune_opacity) | (max_scale > cfg.prune_scale * radius)
        if bool(prune.all()):  # never prune everything: keep the most opaque Gaussian
            prune[torch.argmax(self.opacities)] = False
        # split: two children sampled from the parent, 1/1.6 of its size; the parent is removed
        parents = torch.nonzero(split).squeeze(1)
        child_rows = parents.repeat(2)
        noise = torch.randn(child_rows.numel(), 3, generator=generator).to(device) * self.scales[child_rows]
        from radistill.render.splat import quat_to_rotmat

        offset = (quat_to_rotmat(self.quats[child_rows]) @ noise[:, :, None])[:, :, 0]
        keep_rows = torch.nonzero(~split & ~prune).squeeze(1)
        clone_rows = torch.nonzero(clone & ~prune).squeeze(1)
        rows = torch.cat([keep_rows, clone_rows, child_rows])
        fresh = {name: getattr(self, name).detach()[rows].clone() for name in ("means", "log_scales")}
        n_kept = keep_rows.numel() + clone_rows.numel()
        fresh["means"][n_kept:] += offset
        fresh["log_scales"][n_kept:] -= math.log(1.6)
        self._index_map = torch.cat([keep_rows, torch.full((rows.numel() - keep_rows.numel(),), -1, device=device)])
        self._replace_rows(rows, fresh)
        return {"cloned": int(clone_rows.numel()), "split": int(parents.numel()), "pruned": int(prune.sum()),
                "gaussians": len(self)}

    def carry_optimizer_state(self, old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> None:
        """Keep the Adam moments of the Gaussians that survived densification (new rows start at 0)."""
        if self._index_map is None:
            return
        rows = self._index_map
        for g_old, g_new in zip(old.param_groups, new.param_groups):
            for p_old, p_new in zip(g_old["params"], g_new["params"]):
                state = old.state.get(p_old)
                if not state or p_new.shape[1:] != p_old.shape[1:]:
                    continue
                carried = {}
                for key, value in state.items():
                    if torch.is_tensor(value) and value.shape[:1] == p_old.shape[:1] and value.ndim == p_old.ndim:
                        moved = value.new_zeros((rows.numel(), *value.shape[1:]))
                        known = rows >= 0
                        moved[known] = value[rows[known]]
                        carried[key] = moved
                    else:
                        carried[key] = value
                new.state[p_new] = carried
        self._index_map = None

    def param_groups(self) -> list[dict[str, Any]]:
        cfg = self.config
        return [
            {"params": [self.means], "lr": cfg.lr_means * self.scene_radius},
            {"params": [self.log_scales], "lr": cfg.lr_scales},
            {"params": [self.quats], "lr": cfg.lr_quats},
            {"params": [self.logit_opacities], "lr": cfg.lr_opacities},
            {"params": [self.sh0], "lr": cfg.lr_sh0},
            {"params": [self.shN], "lr": cfg.lr_shN},
        ]

    # ------------------------------------------------------------------ from a teacher

    @classmethod
    def from_teacher(cls, teacher: Representation, config: GaussiansConfig | None = None,
                     views: Any = None, generator: torch.Generator | None = None) -> "GaussiansField":
        """Gaussians seeded where ``teacher``'s render weights are high.

        The teacher renders ``views`` (cameras it is meant to be seen from; by default poses all
        around its aabb), and samples are drawn with probability proportional to their weights. Each seed gets the teacher's colour
        there (as the DC SH term), a scale from the distance to its three nearest seeds, and
        ``initial_opacity``. The distill engine then fits them to the teacher's renders.
        """
        from radistill.fields.seeding import seed_points

        config = config or GaussiansConfig()
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        points, rgb = seed_points(teacher, config.initial_gaussians, generator, views)
        n = points.shape[0]
        if n == 0:
            raise ConfigError(f"the {teacher.kind} teacher renders nothing from around its aabb: no Gaussians to seed")
        spacing = nearest_spacing(points, 3)
        spacing = spacing.clamp(max=float(spacing.median()) * config.initial_scale_cap)
        sh = torch.zeros(n, (config.sh_degree + 1) ** 2, 3)
        sh[:, 0] = (rgb.clamp(0.02, 0.98) - 0.5) / C0
        return cls.from_params(points, torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
                               torch.log(spacing.clamp_min(1e-4))[:, None].repeat(1, 3),
                               torch.full((n,), math.log(config.initial_opacity / (1 - config.initial_opacity))), sh,
                               teacher.aabb.detach().cpu(), config).to(teacher.aabb.device)


def bounds_of(means: Tensor, quantile: float = 0.005, margin: float = 0.1) -> Tensor:
    """An aabb around the bulk of the centres: per-axis quantiles widened by ``margin``.  # [2, 3]"""
    if means.shape[0] == 0:
        raise ConfigError("no Gaussians: cannot derive scene bounds")
    pick = torch.randperm(means.shape[0], generator=torch.Generator().manual_seed(0))[:200000]
    sample = means if means.shape[0] <= 200000 else means[pick.to(means.device)]
    lo = torch.quantile(sample.float(), quantile, dim=0)
    hi = torch.quantile(sample.float(), 1 - quantile, dim=0)
    pad = margin * (hi - lo).clamp_min(1e-3)
    return torch.stack([lo - pad, hi + pad])


def nearest_spacing(points: Tensor, k: int = 3) -> Tensor:
    """Mean distance of each point to its ``k`` nearest neighbours (3DGS's initial scale), by a
    k-d tree (50k seeds: 0.3 s, where all pairwise distances took 6.6 s); 0.01 for a lone point.  # [N]"""
    from scipy.spatial import cKDTree

    n = points.shape[0]
    if n < 2:
        return torch.full((n,), 0.01, dtype=points.dtype, device=points.device)
    xyz = points.detach().cpu().double().numpy()
    dist, _ = cKDTree(xyz).query(xyz, k=min(k + 1, n))  # each point first (or a twin at 0)
    return torch.from_numpy(dist[:, 1:].mean(-1)).to(points.dtype).to(points.device)
