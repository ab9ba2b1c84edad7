"""TensoRF's own model (Chen et al. 2022, the apchenstu/TensoRF code), as a teacher.

A checkpoint of that code cannot become radistill's ``tensorf-vm`` / ``tensorf-cp`` directly:
its colour comes from its own appearance decoder, not from radistill's junction and shared
decoder. So it is a kind of its own, ``tensorf-th``, that answers the representation contract
with TensoRF's exact arithmetic and can teach any student; it is not trained here.

TensoRF's arithmetic (models/tensorBase.py and models/tensoRF.py of apchenstu/TensoRF):

* points are normalised to ``[-1, 1]^3`` over the model's aabb; planes and lines are read with
  ``grid_sample(..., align_corners=True)`` (zero outside). Plane ``i`` of ``[[0,1],[0,2],[1,2]]``
  takes coordinates ``(x[a], x[b])``, line ``i`` of ``[2, 1, 0]`` the coordinate ``x[c]``;
* VM: density feature ``sum_i sum_c plane_i[c] * line_i[c]``, appearance
  ``basis_mat @ concat_i(plane_i * line_i)``; CP: the products of the three lines instead;
* density ``softplus(feature + density_shift)`` (or ``relu(feature)``), and TensoRF's alpha is
  ``1 - exp(-density * step * distance_scale)``, so the world-space density is
  ``distance_scale * density``; points outside the aabb or rejected by the alpha mask (an
  occupancy volume read trilinearly over its own aabb, kept where the value is > 0) are empty;
* colour by the shading mode: ``MLP_Fea`` (features, direction, and sin/cos encodings of both,
  ``2^k`` frequencies, no pi), ``MLP`` (features, direction, encoding of the direction), ``SH``
  (degree-2 SH per channel, ``relu(. + 0.5)``) or ``RGB`` (the features themselves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radistill.fields.base import FieldOutputs, RenderOutputs, Representation, render_volumetric
from radistill.fields.sh import sh_basis

MAT_MODE = ((0, 1), (0, 2), (1, 2))
VEC_MODE = (2, 1, 0)
SHADING_MODES = ("MLP_Fea", "MLP", "SH", "RGB")


@dataclass
class TensoRFCheckpointConfig:
    """What a TensoRF checkpoint's ``kwargs`` say about its model (read, not chosen)."""

    model: str = "TensorVMSplit"
    """TensorVMSplit or TensorCP."""
    grid_size: list[int] = field(default_factory=lambda: [128, 128, 128])
    density_shift: float = -10.0
    distance_scale: float = 25.0
    fea2dense: str = "softplus"
    shading: str = "MLP_Fea"
    view_pe: int = 6
    fea_pe: int = 6
    step_ratio: float = 0.5
    source: str = ""
    """The file it came from."""


def positional_encoding(p: Tensor, freqs: int) -> Tensor:
    """TensoRF's encoding: ``sin`` then ``cos`` of ``p_d * 2^k``, d-major, no identity.  # [N, 2 D F]"""
    bands = 2.0 ** torch.arange(freqs, device=p.device, dtype=p.dtype)
    z = (p[..., None] * bands).reshape(*p.shape[:-1], p.shape[-1] * freqs)
    return torch.cat([torch.sin(z), torch.cos(z)], -1)


class TensoRFCheckpointField(Representation):
    """A trained TensoRF model read from its checkpoint (``radistill.io.tensorf.load_tensorf``)."""

    kind = "tensorf-th"
    Config = TensoRFCheckpointConfig
    config: TensoRFCheckpointConfig

    def __init__(self, config: TensoRFCheckpointConfig, aabb: Tensor, density_lines: list[Tensor],
                 app_lines: list[Tensor], basis: Tensor, density_planes: list[Tensor] | None = None,
                 app_planes: list[Tensor] | None = None, render_module: nn.Module | None = None,
                 alpha_mask: Tensor | None = None, alpha_aabb: Tensor | None = None) -> None:
        super().__init__(config, aabb)
        vm = density_planes is not None
        for i in range(3):
            self.register_buffer(f"density_line_{i}", density_lines[i].float())
            self.register_buffer(f"app_line_{i}", app_lines[i].float())
            if vm:
                self.register_buffer(f"density_plane_{i}", density_planes[i].float())
                self.register_buffer(f"app_plane_{i}", app_planes[i].float())
        self.vm = vm
        self.register_buffer("basis", basis.float())  # [app_dim, components]
        self.render_module = render_module
        self.register_buffer("alpha_mask", None if alpha_mask is None else alpha_mask.float())  # [1, 1, Z, Y, X]
        self.register_buffer("alpha_aabb", None if alpha_aabb is None else alpha_aabb.float())
        for p in self.parameters():
            p.requires_grad_(False)

    # ---- TensoRF's arithmetic
    def normalize(self, x: Tensor) -> Tensor:
        """Points to TensoRF's ``[-1, 1]^3`` over the model's aabb.  # [N, 3]"""
        return (x - self.aabb[0]) * (2.0 / (self.aabb[1] - self.aabb[0])) - 1.0

    @staticmethod
    def _sample(volume: Tensor, coords: Tensor) -> Tensor:
        """``grid_sample`` of a [1, C, H, W] plane or line at [N, 2] (width, height) coordinates.  # [C, N]"""
        return F.grid_sample(volume, coords.view(1, -1, 1, 2), align_corners=True).view(volume.shape[1], -1)

    def _factors(self, xn: Tensor, prefix: str) -> list[Tensor]:
        """Per-axis component values at the points: VM ``plane_i * line_i``, CP ``line_i``.  # 3 x [C_i, N]"""
        out = []
        for i in range(3):
            z = xn[:, VEC_MODE[i]]
            line = self._sample(getattr(self, f"{prefix}_line_{i}"), torch.stack([torch.zeros_like(z), z], -1))
            if self.vm:
                a, b = MAT_MODE[i]
                line = line * self._sample(getattr(self, f"{prefix}_plane_{i}"), xn[:, [a, b]])
            out.append(line)
        return out

    def _density_feature(self, xn: Tensor) -> Tensor:  # [N]
        parts = self._factors(xn, "density")
        if self.vm:
            return sum(p.sum(0) for p in parts)
        return (parts[0] * parts[1] * parts[2]).sum(0)

    def _app_feature(self, xn: Tensor) -> Tensor:  # [N, app_dim]
        parts = self._factors(xn, "app")
        v = torch.cat(parts, 0) if self.vm else parts[0] * parts[1] * parts[2]
        return (self.basis @ v).T

    def _shade(self, features: Tensor, d: Tensor) -> Tensor:  # [N, 3]
        cfg = self.config
        if cfg.shading == "RGB":
            return features
        if cfg.shading == "SH":
            coefs = features.view(-1, 3, 9)
            return torch.relu((coefs * sh_basis(d, 2)[:, None, :]).sum(-1) + 0.5)  # TensoRF's 9 SH functions
        inputs = [features, d]
        if cfg.shading == "MLP_Fea" and cfg.fea_pe > 0:
            inputs.append(positional_encoding(features, cfg.fea_pe))
        if cfg.view_pe > 0:
            inputs.append(positional_encoding(d, cfg.view_pe))
        return torch.sigmoid(self.render_module(torch.cat(inputs, -1)))

    def empty_mask(self, x: Tensor) -> Tensor:
        """Outside the aabb, or rejected by the alpha mask: TensoRF's renderer gives these no density."""
        outside = ((x < self.aabb[0]) | (x > self.aabb[1])).any(-1)
        if self.alpha_mask is None:
            return outside
        lo, hi = self.alpha_aabb[0], self.alpha_aabb[1]
        xm = (x - lo) * (2.0 / (hi - lo)) - 1.0
        alpha = F.grid_sample(self.alpha_mask, xm.view(1, -1, 1, 1, 3), align_corners=True).view(-1)
        return outside | ~(alpha > 0)

    # ---- the contract
    @torch.no_grad()
    def density(self, x: Tensor) -> Tensor:
        f = self._density_feature(self.normalize(x))
        cfg = self.config
        sigma = F.softplus(f + cfg.density_shift) if cfg.fea2dense == "softplus" else torch.relu(f)
        return cfg.distance_scale * sigma

    @torch.no_grad()
    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        sigma = torch.where(self.empty_mask(x), torch.zeros(x.shape[0], device=x.device), self.density(x))
        return FieldOutputs(sigma, self._shade(self._app_feature(self.normalize(x)), d))

    @property
    def volume_step(self) -> int:
        """TensoRF's own step (half a voxel with the default ``step_ratio``), as samples per diagonal."""
        size = self.aabb[1] - self.aabb[0]
        grid = torch.tensor(self.config.grid_size, dtype=torch.float32, device=size.device)
        step = float((size / (grid - 1)).mean()) * self.config.step_ratio
        return max(int(float(size.norm()) / step) + 1, 2)

    def render(self, rays: Any, background: Tensor | None = None, perturb: bool = False,
               generator: torch.Generator | None = None, window: int | None = None) -> RenderOutputs:
        return render_volumetric(self, rays, self.volume_step, background, perturb, generator, window)
