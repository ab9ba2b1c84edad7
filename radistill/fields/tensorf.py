"""``tensorf-vm`` and ``tensorf-cp``: TensoRF's tensor decompositions as junction encoders.

VM: for each of the three axis pairs, ``R`` matrix (plane) components times ``R`` vector (line)
components along the remaining axis. CP: ``R`` rank-one components, a product of three lines.
The density components sum to the raw log-density; the appearance components pass through a
linear basis to the 15 junction features. Grids grow from ``resolution`` to
``final_resolution`` at ``upsample_steps`` (geometric in between), as TensoRF does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radistill.fields.base import JUNCTION_DIM
from radistill.fields.gather import linear_corners, weighted_rows
from radistill.fields.neural import NeuralConfig, NeuralField

# (plane axes, line axis) of each VM mode
VM_MODES = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


def line_lookup(lines: Tensor, coords: Tensor) -> Tensor:
    """Linear interpolation in three stacked lines.

    Args:
        lines: one line per axis, channels last.  # [3, R, C]
        coords: per axis, coordinates in [0, 1].  # [3, N]
    Returns:
        features.  # [3, N, C]
    """
    r, n = lines.shape[1], coords.shape[1]
    low, frac = linear_corners(coords, r)  # [3, N]
    base = low + torch.arange(3, device=coords.device)[:, None] * r
    rows = torch.stack([base, base + 1], -1).reshape(3 * n, 2)
    weights = torch.stack([1.0 - frac, frac], -1).reshape(3 * n, 2)
    c = lines.shape[-1]  # explicit sizes: an empty batch of points is valid
    return weighted_rows(lines.reshape(3 * r, c), rows, weights).reshape(3, n, c)


def plane_lookup(planes: Tensor, coords: Tensor) -> Tensor:
    """Bilinear interpolation in three stacked planes.

    Args:
        planes: one plane per mode, channels last.  # [3, R, R, C]
        coords: per mode, the two plane coordinates in [0, 1].  # [3, N, 2]
    Returns:
        features.  # [3, N, C]
    """
    r, n = planes.shape[1], coords.shape[1]
    low, frac = linear_corners(coords, r)  # [3, N, 2]
    base = low[..., 0] * r + low[..., 1] + torch.arange(3, device=coords.device)[:, None] * r * r
    rows = torch.stack([base, base + 1, base + r, base + r + 1], -1).reshape(3 * n, 4)
    fa, fb = frac[..., 0], frac[..., 1]
    weights = torch.stack([(1 - fa) * (1 - fb), (1 - fa) * fb, fa * (1 - fb), fa * fb], -1).reshape(3 * n, 4)
    c = planes.shape[-1]
    return weighted_rows(planes.reshape(3 * r * r, c), rows, weights).reshape(3, n, c)


def resize_channels_last(p: Tensor, resolution: int) -> Tensor:
    """Resample lines [3, R, C] or planes [3, R, R, C] to ``resolution`` (corners aligned)."""
    if p.ndim == 3:
        x = p.permute(0, 2, 1)[..., None]  # [3, C, R, 1]
        return F.interpolate(x, size=(resolution, 1), mode="bilinear", align_corners=True)[..., 0].permute(0, 2, 1).contiguous()
    x = p.permute(0, 3, 1, 2)
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=True).permute(0, 2, 3, 1).contiguous()


@dataclass
class TensoRFConfig(NeuralConfig):
    """Options shared by both TensoRF kinds."""

    resolution: int = 32
    """Grid resolution per axis at the start of training."""
    final_resolution: int = 160
    """Grid resolution per axis after the last upsampling."""
    upsample_steps: tuple[int, ...] = (300, 700, 1200, 1800)
    """Training steps at which the grids are upsampled."""
    lr_grid: float = 0.02
    lr: float = 1e-3
    """Learning rate of the appearance basis."""
    init_std: float = 0.1
    distill_lr_grid: float = 0.02
    """Learning rate of the grids when distilled from a teacher (``lr_grid`` from photos). VM
    keeps TensoRF's rate (lego, hashgrid teacher, 2 CPU minutes, two seeds each: 32.45 dB
    held-out at 0.02, 32.41 at 0.04)."""


@dataclass
class TensoRFVMConfig(TensoRFConfig):
    density_components: int = 16
    app_components: int = 48


@dataclass
class TensoRFCPConfig(TensoRFConfig):
    density_components: int = 384
    app_components: int = 864
    """Four and three times TensoRF's CP sizes (96 density, 288 appearance components): CP's
    components are only lines, 3.8 MB for all at resolution 256. As a student of the lego
    tensorf-vm (33.83 dB held-out; 2 CPU minutes) 96 and 288 gave 32.60 dB held-out, 192 and 432
    32.98-33.02, 256 and 576 33.17, 384 and 864 33.27; of the lego hash grid (32.79 dB) 96 and 288
    gave 32.15, 384 and 864 32.63. (Earlier, of the hash grid: 288 appearance components 31.74,
    144 31.35, the training benchmark's smaller preset of 48 and 96 30.73.)"""
    final_resolution: int = 256
    upsample_steps: tuple[int, ...] = field(default=(300, 700, 1200, 1800))
    distill_lr_grid: float = 0.04
    """CP's lines learn faster from a teacher's points at twice TensoRF's rate (lego,
    tensorf-vm teacher, 2 CPU minutes, two seeds each: 32.37 dB held-out at 0.01, 32.49 at
    0.02, 32.59 at 0.04, 32.49 at 0.08)."""


def resolution_at(cfg: TensoRFConfig, step: int) -> int:
    """The grid resolution in force after ``step`` upsampling checkpoints have passed."""
    n_up = sum(1 for s in cfg.upsample_steps if step >= s)
    if n_up == 0 or not cfg.upsample_steps:
        return cfg.resolution
    ratio = math.log(cfg.final_resolution / cfg.resolution) / len(cfg.upsample_steps)
    return int(round(cfg.resolution * math.exp(ratio * n_up)))


class TensorEncoder(nn.Module):
    """Shared machinery: density and appearance factors and the basis to 15 features."""

    def __init__(self, cfg: TensoRFConfig, app_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.basis = nn.Linear(app_channels, JUNCTION_DIM - 1, bias=False)

    @property
    def resolution(self) -> int:
        return self.density_lines.shape[1]

    factor_names: tuple[str, ...] = ()

    def factors(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in self.factor_names]

    @torch.no_grad()
    def resize(self, resolution: int) -> None:
        """Resample every factor to ``resolution`` (bilinear / linear, corners aligned).

        The factors become new parameters, so optimisers must be rebuilt afterwards."""
        for name in self.factor_names:
            setattr(self, name, nn.Parameter(resize_channels_last(getattr(self, name).detach(), resolution)))

    def forward(self, u: Tensor) -> Tensor:  # [N, 3] in [0, 1] -> [N, 16]
        raw, app = self.decompose(u)
        return torch.cat([raw[:, None], self.basis(app)], -1)

    def decompose(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Raw log-density [N] and appearance features [N, C] at normalised points."""
        raise NotImplementedError


class VMEncoder(TensorEncoder):
    def __init__(self, cfg: TensoRFVMConfig) -> None:
        super().__init__(cfg, 3 * cfg.app_components)
        r, std = cfg.resolution, cfg.init_std
        self.density_planes = nn.Parameter(std * torch.randn(3, r, r, cfg.density_components))
        self.density_lines = nn.Parameter(std * torch.randn(3, r, cfg.density_components))
        self.app_planes = nn.Parameter(std * torch.randn(3, r, r, cfg.app_components))
        self.app_lines = nn.Parameter(std * torch.randn(3, r, cfg.app_components))

    factor_names = ("density_planes", "density_lines", "app_planes", "app_lines")

    def decompose(self, u: Tensor) -> tuple[Tensor, Tensor]:
        plane_uv = torch.stack([u[:, list(ab)] for ab, _ in VM_MODES])  # [3, N, 2]
        line_w = torch.stack([u[:, c] for _, c in VM_MODES])  # [3, N]
        density = (plane_lookup(self.density_planes, plane_uv) * line_lookup(self.density_lines, line_w)).sum((0, 2))
        app = plane_lookup(self.app_planes, plane_uv) * line_lookup(self.app_lines, line_w)  # [3, N, C]
        return density, app.permute(1, 0, 2).reshape(u.shape[0], 3 * app.shape[-1])


class _ProductOfThree(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, factors: Tensor) -> Tensor:
        ctx.save_for_backward(factors)
        return factors[0] * factors[1] * factors[2]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (f,) = ctx.saved_tensors
        out = torch.empty_like(f)
        for i, (a, b) in enumerate(((1, 2), (0, 2), (0, 1))):
            torch.mul(f[a], f[b], out=out[i]).mul_(grad)
        return out


def product_of_three(factors: Tensor) -> Tensor:
    """``factors.prod(0)`` for three stacked factors, with a backward pass that writes each
    factor's gradient in place (``prod``'s own backward, which guards against zeros, took more
    than half of a CP encoder's forward and backward on CPU).  # [3, ...] -> [...]"""
    return _ProductOfThree.apply(factors)


class CPEncoder(TensorEncoder):
    def __init__(self, cfg: TensoRFCPConfig) -> None:
        super().__init__(cfg, cfg.app_components)
        r = cfg.resolution
        # a product of three factors: start them larger than VM's so the sum is not vanishing
        self.density_lines = nn.Parameter(0.2 * torch.randn(3, r, cfg.density_components))
        self.app_lines = nn.Parameter(0.2 * torch.randn(3, r, cfg.app_components))

    factor_names = ("density_lines", "app_lines")

    def decompose(self, u: Tensor) -> tuple[Tensor, Tensor]:
        coords = u.t()  # [3, N]
        density = product_of_three(line_lookup(self.density_lines, coords)).sum(-1)
        app = product_of_three(line_lookup(self.app_lines, coords))  # [N, C]
        return density, app


class _TensoRFField(NeuralField):
    config: TensoRFConfig
    encoder: TensorEncoder

    def encoder_param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": self.encoder.factors(), "lr": self.config.lr_grid},
            {"params": list(self.encoder.basis.parameters()), "lr": self.config.lr},
        ]

    @classmethod
    def distillation_start(cls, config: TensoRFConfig) -> TensoRFConfig:
        # point-level supervision needs no coarse-to-fine schedule: start at the final resolution
        return dataclasses.replace(config, resolution=config.final_resolution, upsample_steps=(),
                                   lr_grid=config.distill_lr_grid)

    def on_train_step(self, step: int, generator: torch.Generator | None = None, progress: float = 0.0) -> bool:
        target = resolution_at(self.config, step)
        if target != self.encoder.resolution:
            self.encoder.resize(target)
            return True
        return False

    def prepare_state(self, state: dict[str, Tensor]) -> None:
        """Take the saved grid resolution, and the saved component counts where they differ from
        this config's (a nerfstudio run keeps only the options it was given, so one made before
        the kind's default sizes changed is rebuilt with the new defaults)."""
        density, app = state.get("encoder.density_lines"), state.get("encoder.app_lines")
        if density is None or app is None or density.ndim != 3 or app.ndim != 3:
            return
        counts = {"density_components": density.shape[-1], "app_components": app.shape[-1]}
        if any(getattr(self.config, k) != v for k, v in counts.items()):
            self.config = dataclasses.replace(self.config, resolution=density.shape[1], **counts)
            self.encoder = type(self.encoder)(self.config)
        elif density.shape[1] != self.encoder.resolution:
            self.encoder.resize(density.shape[1])


class TensoRFVMField(_TensoRFField):
    kind = "tensorf-vm"
    Config = TensoRFVMConfig

    def __init__(self, config: TensoRFVMConfig, aabb: Tensor) -> None:
        super().__init__(config, aabb)
        self.encoder = VMEncoder(config)


class TensoRFCPField(_TensoRFField):
    kind = "tensorf-cp"
    Config = TensoRFCPConfig

    def __init__(self, config: TensoRFCPConfig, aabb: Tensor) -> None:
        super().__init__(config, aabb)
        self.encoder = CPEncoder(config)
