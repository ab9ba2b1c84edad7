"""``tensorf-vm`` and ``tensorf-cp``: TensoRF's tensor decompositions as junction encoders.

VM: for each of the three axis pairs, ``R`` matrix (plane) components times ``R`` vector (line)
components along the remaining axis. CP: ``R`` rank-one components, a product of three lines.
The density components sum to the raw log-density; the appearance components pass through a
linear basis to the 15 junction features. Grids grow from ``resolution`` to
``final_resolution`` at ``upsample_steps`` (geometric in between), as TensoRF does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radistill.fields.base import JUNCTION_DIM
from radistill.fields.neural import NeuralConfig, NeuralField

# (plane axes, line axis) of each VM mode
VM_MODES = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


def sample_planes(planes: Tensor, coords: Tensor) -> Tensor:
    """Bilinear lookup in stacked planes.

    Args:
        planes: one plane per mode.  # [3, C, R, R]
        coords: per mode, the two plane coordinates in [-1, 1].  # [3, N, 2]
    Returns:
        features.  # [3, C, N]
    """
    return F.grid_sample(planes, coords[:, :, None, :], mode="bilinear", align_corners=True)[..., 0]


def sample_lines(lines: Tensor, coords: Tensor) -> Tensor:
    """Linear lookup in stacked lines ``[3, C, R, 1]`` at ``coords`` [3, N] in [-1, 1].  # [3, C, N]"""
    grid = torch.stack([torch.zeros_like(coords), coords], -1)[:, :, None, :]
    return F.grid_sample(lines, grid, mode="bilinear", align_corners=True)[..., 0]


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


@dataclass
class TensoRFVMConfig(TensoRFConfig):
    density_components: int = 16
    app_components: int = 48


@dataclass
class TensoRFCPConfig(TensoRFConfig):
    density_components: int = 96
    app_components: int = 144
    final_resolution: int = 256
    upsample_steps: tuple[int, ...] = field(default=(300, 700, 1200, 1800))


def resolution_at(cfg: TensoRFConfig, step: int) -> int:
    """The grid resolution in force after ``step`` upsampling checkpoints have passed."""
    n_up = sum(1 for s in cfg.upsample_steps if step >= s)
    if n_up == 0 or not cfg.upsample_steps:
        return cfg.resolution
    ratio = math.log(cfg.final_resolution / cfg.resolution) / len(cfg.upsample_steps)
    return int(round(cfg.resolution * math.exp(ratio * n_up)))


class TensorEncoder(nn.Module):
    """Shared machinery: density and appearance factors and the basis to 15 features."""

    def __init__(self, cfg: TensoRFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.basis = nn.Linear(self.app_channels(), JUNCTION_DIM - 1, bias=False)

    def app_channels(self) -> int:
        raise NotImplementedError

    @property
    def resolution(self) -> int:
        raise NotImplementedError

    def factors(self) -> list[nn.Parameter]:
        raise NotImplementedError

    @torch.no_grad()
    def resize(self, resolution: int) -> None:
        """Resample every factor to ``resolution`` (bilinear / linear, corners aligned)."""
        for p in self.factors():
            size = (resolution, resolution) if p.shape[-1] != 1 else (resolution, 1)
            p.data = F.interpolate(p.data, size=size, mode="bilinear", align_corners=True)

    def forward(self, u: Tensor) -> Tensor:  # [N, 3] in [0, 1] -> [N, 16]
        raw, app = self.decompose(u * 2.0 - 1.0)
        return torch.cat([raw[:, None], self.basis(app)], -1)

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class VMEncoder(TensorEncoder):
    def __init__(self, cfg: TensoRFVMConfig) -> None:
        self.n_density, self.n_app = cfg.density_components, cfg.app_components
        super().__init__(cfg)
        r, std = cfg.resolution, cfg.init_std
        self.density_planes = nn.Parameter(std * torch.randn(3, self.n_density, r, r))
        self.density_lines = nn.Parameter(std * torch.randn(3, self.n_density, r, 1))
        self.app_planes = nn.Parameter(std * torch.randn(3, self.n_app, r, r))
        self.app_lines = nn.Parameter(std * torch.randn(3, self.n_app, r, 1))

    def app_channels(self) -> int:
        return 3 * self.n_app

    @property
    def resolution(self) -> int:
        return self.density_planes.shape[-1]

    def factors(self) -> list[nn.Parameter]:
        return [self.density_planes, self.density_lines, self.app_planes, self.app_lines]

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # grid_sample's (x, y) address (width, height) = (last, second-to-last) dims
        plane_xy = torch.stack([x[:, [b, a]] for (a, b), _ in VM_MODES])  # [3, N, 2]
        line_c = torch.stack([x[:, c] for _, c in VM_MODES])  # [3, N]
        density = (sample_planes(self.density_planes, plane_xy) * sample_lines(self.density_lines, line_c)).sum((0, 1))
        app = sample_planes(self.app_planes, plane_xy) * sample_lines(self.app_lines, line_c)  # [3, C, N]
        return density, app.reshape(-1, x.shape[0]).t()


class CPEncoder(TensorEncoder):
    def __init__(self, cfg: TensoRFCPConfig) -> None:
        self.n_density, self.n_app = cfg.density_components, cfg.app_components
        super().__init__(cfg)
        r, std = cfg.resolution, cfg.init_std
        # three lines per component; a CP product of three 0.1-scale factors starts tiny, so
        # the lines start near 1/cuberoot(R) magnitude to let the sum begin at a useful scale
        self.density_lines = nn.Parameter(0.2 * torch.randn(3, self.n_density, r, 1))
        self.app_lines = nn.Parameter(0.2 * torch.randn(3, self.n_app, r, 1))

    def app_channels(self) -> int:
        return self.n_app

    @property
    def resolution(self) -> int:
        return self.density_lines.shape[-2]

    def factors(self) -> list[nn.Parameter]:
        return [self.density_lines, self.app_lines]

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        coords = x.t()  # [3, N]
        density = sample_lines(self.density_lines, coords).prod(0).sum(0)
        app = sample_lines(self.app_lines, coords).prod(0)  # [C, N]
        return density, app.t()


class _TensoRFField(NeuralField):
    config: TensoRFConfig
    encoder: TensorEncoder

    def encoder_param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": self.encoder.factors(), "lr": self.config.lr_grid},
            {"params": list(self.encoder.basis.parameters()), "lr": self.config.lr},
        ]

    def on_train_step(self, step: int, generator: torch.Generator | None = None) -> bool:
        target = resolution_at(self.config, step)
        if target != self.encoder.resolution:
            self.encoder.resize(target)
            return True
        return False

    def prepare_state(self, state: dict[str, Tensor]) -> None:
        key = "encoder." + ("density_planes" if isinstance(self.encoder, VMEncoder) else "density_lines")
        if key in state:
            saved = state[key].shape[-2]
            if saved != self.encoder.resolution:
                self.encoder.resize(saved)


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
