"""What every neural kind shares: the 16-d junction, the density activation, the colour decoder.

A neural field is ``encoder(x) -> junction [N, 16]`` (1 raw log-density + 15 features), then
``density = trunc_exp(clamp(raw, -2, 7))`` and ``rgb = decoder(features, SH(d))``. The kinds
differ only in their encoder, so a student can match a teacher's junction directly and
inherit its decoder.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from radistill.errors import ConfigError
from radistill.fields.base import JUNCTION_DIM, FieldOutputs, RenderOutputs, Representation
from radistill.fields.sh import sh_basis
from radistill.render.occupancy import OccupancyGrid
from radistill.render.volume import render_rays

RAW_MIN, RAW_MAX = -2.0, 7.0


class _DensityActivation(torch.autograd.Function):
    """``exp(clamp(raw, -2, 7))`` whose gradient still flows where it would move ``raw`` back
    into range, so that a clamped unit is never stuck (exp is safe: the input is clamped)."""

    @staticmethod
    def forward(ctx: Any, raw: Tensor) -> Tensor:
        out = torch.exp(raw.clamp(RAW_MIN, RAW_MAX))
        ctx.save_for_backward(raw, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        raw, out = ctx.saved_tensors
        # descent moves raw by -grad*out: allowed inside the range, or when it points inward
        inward = ((raw >= RAW_MIN) & (raw <= RAW_MAX)) | ((raw < RAW_MIN) & (grad < 0)) | ((raw > RAW_MAX) & (grad > 0))
        return grad * out * inward


def density_activation(raw: Tensor) -> Tensor:
    """Density from the raw log-density of the junction (the same for every neural kind).  # [N]"""
    return _DensityActivation.apply(raw)


def mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width``, then a linear output layer."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(width if depth > 0 else n_in, n_out))
    return nn.Sequential(*layers)


class ColorDecoder(nn.Module):
    """The shared colour decoder: junction features (15) and SH of the view direction -> RGB."""

    def __init__(self, sh_degree: int = 3, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        self.net = mlp(JUNCTION_DIM - 1 + (sh_degree + 1) ** 2, width, depth, 3)

    def forward(self, features: Tensor, d: Tensor) -> Tensor:  # [N, 15], [N, 3] -> [N, 3]
        return torch.sigmoid(self.net(torch.cat([features, sh_basis(d, self.sh_degree)], -1)))


@dataclass
class NeuralConfig:
    """Options shared by every neural kind (the renderer and the decoder)."""

    samples_per_ray: int = 256
    """Samples along the aabb diagonal; sets the marching step."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid that skips empty space."""
    early_stop: float = 1e-4
    """Transmittance under which a ray stops."""
    sh_degree: int = 3
    """Degree of the SH encoding of view directions fed to the colour decoder."""
    decoder_width: int = 64
    decoder_depth: int = 2
    lr_decoder: float = 1e-3
    """Learning rate of the colour decoder."""
    backend: str = "auto"
    """Kernels for marching, compositing and (``hashgrid``) the encoding: ``torch`` (the
    reference), ``triton`` (fused, CUDA), or ``auto`` (Triton on CUDA when installed)."""

    def __post_init__(self) -> None:
        from radistill.kernels import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


class NeuralField(Representation):
    """Base of the neural kinds. Subclasses build ``self.encoder``: [N, 3] in [0, 1]^3 -> [N, 16]."""

    config: NeuralConfig

    def __init__(self, config: NeuralConfig, aabb: Tensor) -> None:
        super().__init__(config, aabb)
        self.decoder = ColorDecoder(config.sh_degree, config.decoder_width, config.decoder_depth)
        self.occupancy = OccupancyGrid(self.aabb, config.occupancy_resolution)

    @property
    def step_size(self) -> float:
        """Marching step in world units."""
        return float((self.aabb[1] - self.aabb[0]).norm()) / self.config.samples_per_ray

    def normalize(self, x: Tensor) -> Tensor:
        """World points to the unit cube of the aabb.  # [N, 3]"""
        return ((x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)

    def junction(self, x: Tensor) -> Tensor:
        """The 16-d junction at world points ``x``.  # [N, 16]"""
        return self.encoder(self.normalize(x))

    def density(self, x: Tensor) -> Tensor:
        return density_activation(self.junction(x)[:, 0])

    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        j = self.junction(x)
        return FieldOutputs(density_activation(j[:, 0]), self.decoder(j[:, 1:], d), j)

    def _sigma_rgb(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        out = self.query(x, d)
        return out.sigma, out.rgb

    def render(self, rays: Any, background: Tensor | None = None, perturb: bool = False,
               generator: torch.Generator | None = None, window: int | None = None) -> RenderOutputs:
        """Volume rendering with occupancy skipping.

        Args:
            rays: ``Rays`` to render.
            background: colour behind the scene.  # [3]
            perturb: jitter samples (training).
            window: march this many samples at a time with early termination (inference).
        """
        out = render_rays(self._sigma_rgb, rays, self.aabb, self.step_size, self.occupancy, background, perturb,
                          generator, self.config.early_stop, window, self.config.backend)
        samples = out.samples
        return RenderOutputs(out.rgb, out.depth, out.opacity, out.weights,
                             None if samples is None else samples.ray_ids,
                             None if samples is None else samples.positions, out.n_samples)

    def empty_mask(self, x: Tensor) -> Tensor:
        return ~self.occupancy.is_occupied(x)

    @classmethod
    def from_teacher(cls, teacher: Representation, config: Any = None, views: Any = None) -> "NeuralField":
        """A student over the teacher's aabb that knows where the teacher's scene is empty.

        It inherits the teacher's colour decoder when the teacher is neural (the decoder's
        options then follow the teacher's), and fills its occupancy grid from the density the
        teacher's renderer sees. The encoder starts fresh: the distill engine fits it.
        """
        config = cls.Config() if config is None else config
        if isinstance(teacher, NeuralField):
            config = dataclasses.replace(config, sh_degree=teacher.config.sh_degree,
                                         decoder_width=teacher.config.decoder_width,
                                         decoder_depth=teacher.config.decoder_depth)
        config = cls.distillation_start(config)
        student = cls(config, teacher.aabb.detach().cpu()).to(teacher.aabb.device)
        if isinstance(teacher, NeuralField):
            student.decoder.load_state_dict(teacher.decoder.state_dict())
        student.fill_occupancy_from(teacher)
        return student

    @classmethod
    def distillation_start(cls, config: NeuralConfig) -> NeuralConfig:
        """The config a distilled student starts from (a kind may skip its coarse-to-fine schedule)."""
        return config

    @torch.no_grad()
    def fill_occupancy_from(self, teacher: Representation, passes: int = 4, generator: torch.Generator | None = None) -> None:
        """Occupancy from the maximum of the teacher's visible density over ``passes`` jittered
        samples per cell, or, from a teacher that bounds its density (a mesh, whose soft shell is
        thinner than a cell: four samples missed a fifth of lego's surface cells), from that
        bound over each whole cell."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.occupancy.density.zero_()
        if teacher.bounds_density:
            radius = self.occupancy.cell_radius
            self.occupancy.update(lambda x: teacher.max_density_near(x, radius), self.step_size, decay=1.0,
                                  at_centres=True)
            return
        for _ in range(passes):
            self.occupancy.update(teacher.visible_density, self.step_size, decay=1.0, generator=generator)

    def update_occupancy(self, generator: torch.Generator | None = None, decay: float = 0.6) -> None:
        self.occupancy.update(self.density, self.step_size, decay=decay, generator=generator)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.decoder.parameters()), "lr": self.config.lr_decoder}] + self.encoder_param_groups()

    def encoder_param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.encoder.parameters()), "lr": self.config.lr_decoder}]


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """NeRF's encoding ``[x, sin(2^k pi x), cos(2^k pi x)]`` for k < n_freqs.  # [N, 3 + 6 n_freqs]"""
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = (x[..., None] * freqs).flatten(-2)  # [N, 3 * n_freqs]
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], -1)
