"""Pinhole cameras, ray generation, pose samplers, and the similarity between two frames.

Conventions: camera-to-world matrices in OpenGL/Blender axes (the camera looks down its -z
axis, +y is up, +x is right); pixel centres sit at ``(i + 0.5, j + 0.5)``; world units are
those of the scene. Forward-facing scenes (LLFF) may carry NDC parameters, in which case the
rays are warped into normalised device coordinates exactly as in the original NeRF code,
so that ``t`` in ``[0, 1]`` spans the whole frustum from the near plane to infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from radistill.errors import ConfigError


@dataclass
class Rays:
    """A batch of rays.

    ``directions`` are unit vectors for ordinary scenes; in NDC they are not, and
    ``viewdirs`` keeps the unit world-space direction that the colour decoder sees.
    """

    origins: Tensor  # [R, 3]
    directions: Tensor  # [R, 3]
    viewdirs: Tensor  # [R, 3] unit
    near: Tensor  # [R]
    far: Tensor  # [R]

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, index: Any) -> "Rays":
        return Rays(
            self.origins[index], self.directions[index], self.viewdirs[index],
            self.near[index], self.far[index],
        )

    def to(self, device: torch.device | str) -> "Rays":
        return Rays(*(t.to(device) for t in (self.origins, self.directions, self.viewdirs, self.near, self.far)))

    @staticmethod
    def cat(parts: list["Rays"]) -> "Rays":
        return Rays(*(torch.cat([getattr(p, k) for p in parts]) for k in ("origins", "directions", "viewdirs", "near", "far")))


@dataclass
class NDC:
    """Normalised device coordinates of a forward-facing capture (NeRF's ``ndc_rays``)."""

    focal: float
    width: int
    height: int
    near: float = 1.0


@dataclass
class Cameras:
    """``N`` pinhole cameras that share one image size.

    Attributes:
        c2w: camera-to-world matrices, OpenGL axes.  # [N, 4, 4]
        fx, fy, cx, cy: intrinsics in pixels.  # [N] each
        width, height: image size in pixels.
        near, far: ray range for scenes that are not bounded by an aabb intersection.
        ndc: NDC parameters for forward-facing scenes, else ``None``.
    """

    c2w: Tensor  # [N, 4, 4]
    fx: Tensor  # [N]
    fy: Tensor  # [N]
    cx: Tensor  # [N]
    cy: Tensor  # [N]
    width: int
    height: int
    near: float = 0.05
    far: float = 1e3
    ndc: NDC | None = None

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[1:] not in ((4, 4), (3, 4)):
            raise ConfigError(f"cameras: c2w must be [N, 4, 4] or [N, 3, 4], got {list(self.c2w.shape)}")
        if self.c2w.shape[1] == 3:
            bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=self.c2w.dtype).expand(self.c2w.shape[0], 1, 4)
            self.c2w = torch.cat([self.c2w, bottom], dim=1)
        n = self.c2w.shape[0]
        for name in ("fx", "fy", "cx", "cy"):
            value = torch.as_tensor(getattr(self, name), dtype=torch.float32)
            setattr(self, name, value.expand(n).clone() if value.ndim == 0 else value)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index: Any) -> "Cameras":
        if isinstance(index, int):
            index = [index]
        return replace(self, c2w=self.c2w[index], fx=self.fx[index], fy=self.fy[index],
                       cx=self.cx[index], cy=self.cy[index])

    @property
    def centers(self) -> Tensor:  # [N, 3]
        return self.c2w[:, :3, 3]

    def rays_for_pixels(self, cam: Tensor, px: Tensor, py: Tensor) -> Rays:
        """Rays through pixel coordinates (continuous, pixel centres at +0.5).

        Args:
            cam: camera index of each ray.  # [R] long
            px, py: horizontal and vertical pixel coordinates.  # [R] float
        """
        c2w = self.c2w[cam]  # [R, 4, 4]
        dirs_cam = torch.stack(
            [(px - self.cx[cam]) / self.fx[cam], -(py - self.cy[cam]) / self.fy[cam], -torch.ones_like(px)], -1
        )  # [R, 3]
        dirs = (c2w[:, :3, :3] @ dirs_cam[..., None])[..., 0]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = c2w[:, :3, 3].clone()
        if self.ndc is not None:
            origins_ndc, dirs_ndc = ndc_rays(origins, dirs, self.ndc)
            ones = torch.ones_like(px)
            return Rays(origins_ndc, dirs_ndc, dirs, 0.0 * ones, ones)
        ones = torch.ones_like(px)
        return Rays(origins, dirs, dirs, self.near * ones, self.far * ones)

    def image_rays(self, index: int) -> Rays:
        """All rays of image ``index`` in row-major order (``H * W`` rays)."""
        ys, xs = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32) + 0.5,
            torch.arange(self.width, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        cam = torch.full((self.height * self.width,), index, dtype=torch.long)
        return self.rays_for_pixels(cam, xs.reshape(-1), ys.reshape(-1))

    def scaled(self, factor: float) -> "Cameras":
        """The same cameras for images resized by ``factor`` (0.5 halves width and height)."""
        width, height = round(self.width * factor), round(self.height * factor)
        sx, sy = width / self.width, height / self.height
        ndc = None if self.ndc is None else replace(self.ndc, focal=self.ndc.focal * sx, width=width, height=height)
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
                       width=width, height=height, ndc=ndc)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able description (stored in checkpoints as the pose distribution)."""
        return {
            "c2w": self.c2w[:, :3, :].tolist(),
            "fx": self.fx.tolist(), "fy": self.fy.tolist(), "cx": self.cx.tolist(), "cy": self.cy.tolist(),
            "width": self.width, "height": self.height, "near": self.near, "far": self.far,
            "ndc": None if self.ndc is None else vars(self.ndc),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Cameras":
        ndc = None if d.get("ndc") is None else NDC(**d["ndc"])
        return Cameras(
            torch.tensor(d["c2w"], dtype=torch.float32), torch.tensor(d["fx"]), torch.tensor(d["fy"]),
            torch.tensor(d["cx"]), torch.tensor(d["cy"]), int(d["width"]), int(d["height"]),
            float(d.get("near", 0.05)), float(d.get("far", 1e3)), ndc,
        )


@dataclass
class Similarity:
    """The map ``p -> scale * (rotation @ p + translation)`` from one frame to another (how a
    nerfstudio data parser moves a scene: ``dataparser_transforms.json``). Each method follows
    the dtype and device of its input."""

    rotation: Tensor  # [3, 3]
    translation: Tensor  # [3]
    scale: float = 1.0

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(torch.eye(3), torch.zeros(3), 1.0)

    def inverse(self) -> "Similarity":
        r = self.rotation.T
        return Similarity(r, -self.scale * (r @ self.translation), 1.0 / self.scale)

    def points(self, p: Tensor) -> Tensor:  # [..., 3]
        return (p @ self.rotation.to(p).T + self.translation.to(p)) * self.scale

    def directions(self, d: Tensor) -> Tensor:
        """Directions rotated (unit directions stay unit).  # [..., 3]"""
        return d @ self.rotation.to(d).T

    def c2w(self, c2w: Tensor) -> Tensor:
        """Camera-to-world matrices [N, 3 or 4, 4] moved into the other frame (rotation and
        centre; focal lengths are untouched, so the cameras see the same scene).  # [N, 4, 4]"""
        out = torch.eye(4, dtype=c2w.dtype, device=c2w.device).repeat(c2w.shape[0], 1, 1)
        out[:, :3, :3] = self.rotation.to(c2w) @ c2w[:, :3, :3]
        out[:, :3, 3] = self.points(c2w[:, :3, 3])
        return out


def ndc_rays(origins: Tensor, dirs: Tensor, ndc: NDC) -> tuple[Tensor, Tensor]:
    """Warp world rays to NDC (NeRF, appendix C): ``t`` in [0, 1] spans near plane to infinity."""
    t = -(ndc.near + origins[:, 2]) / dirs[:, 2]
    o = origins + t[:, None] * dirs
    ax, ay = -2.0 * ndc.focal / ndc.width, -2.0 * ndc.focal / ndc.height
    o0 = ax * o[:, 0] / o[:, 2]
    o1 = ay * o[:, 1] / o[:, 2]
    o2 = 1.0 + 2.0 * ndc.near / o[:, 2]
    d0 = ax * (dirs[:, 0] / dirs[:, 2] - o[:, 0] / o[:, 2])
    d1 = ay * (dirs[:, 1] / dirs[:, 2] - o[:, 1] / o[:, 2])
    d2 = -2.0 * ndc.near / o[:, 2]
    return torch.stack([o0, o1, o2], -1), torch.stack([d0, d1, d2], -1)


# ----------------------------------------------------------------------------- pose samplers


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices (OpenGL axes) of cameras at ``eye`` looking at ``target``.

    Args:
        eye: camera centres.  # [N, 3]
        target: points looked at.  # [N, 3] or [3]
        up: world up vector, +z by default (Blender).  # [3]
    Returns:
        c2w.  # [N, 4, 4]
    """
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up
    back = eye - target
    back = back / back.norm(dim=-1, keepdim=True)
    right = torch.cross(up.expand_as(back), back, dim=-1)
    # cameras looking straight along ``up`` get an arbitrary but valid right vector
    degenerate = right.norm(dim=-1) < 1e-6
    if degenerate.any():
        right[degenerate] = torch.cross(torch.tensor([0.0, 1.0, 0.0]).expand_as(back[degenerate]), back[degenerate], dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    cam_up = torch.cross(back, right, dim=-1)
    c2w = torch.eye(4).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, cam_up, back, eye
    return c2w


def spherical_to_cartesian(radius: Tensor, elevation: Tensor, azimuth: Tensor) -> Tensor:
    """Points at ``radius`` with elevation/azimuth in radians (z up).  # [N, 3]"""
    return torch.stack(
        [radius * torch.cos(elevation) * torch.cos(azimuth), radius * torch.cos(elevation) * torch.sin(azimuth),
         radius * torch.sin(elevation)], -1)


def cartesian_to_spherical(rel: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Radius, elevation and azimuth (radians, z up) of offsets ``rel`` [N, 3]: the inverse of
    ``spherical_to_cartesian``.  # 3 x [N]"""
    radius = rel.norm(dim=-1)
    elevation = torch.asin((rel[:, 2] / radius.clamp_min(1e-12)).clamp(-1, 1))
    return radius, elevation, torch.atan2(rel[:, 1], rel[:, 0])


@dataclass
class SphereSampler:
    """Random poses on a sphere (or the upper hemisphere) around ``center``, looking at it."""

    radius: float = 4.0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hemisphere: bool = True
    min_elevation_deg: float = -90.0

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # [n, 4, 4]
        lo = max(0.0 if self.hemisphere else -1.0, math.sin(math.radians(self.min_elevation_deg)))
        z = lo + (1.0 - lo) * torch.rand(n, generator=generator)
        elevation = torch.asin(z.clamp(-0.999, 0.999))
        azimuth = 2 * math.pi * torch.rand(n, generator=generator)
        center = torch.tensor(self.center)
        eye = center + spherical_to_cartesian(torch.full((n,), self.radius), elevation, azimuth)
        return look_at(eye, center)


@dataclass
class LikeCamerasSampler:
    """Random poses drawn like a set of cameras.

    For cameras around an object: radius, elevation and azimuth of a randomly chosen camera,
    each jittered, looking at the point the cameras look at. For forward-facing (NDC)
    captures: a random camera's orientation with its position jittered within the spread of
    the camera centres.
    """

    cameras: Cameras
    jitter_radius: float = 0.05  # relative
    jitter_angle_deg: float = 10.0
    center: Tensor | None = None
    """The point looked at; by default the point nearest to all the cameras' optical axes."""

    def __post_init__(self) -> None:
        if self.center is None:
            self.center = look_at_point(self.cameras.c2w)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # [n, 4, 4]
        pick = torch.randint(len(self.cameras), (n,), generator=generator)
        c2w = self.cameras.c2w[pick].clone()
        eye = c2w[:, :3, 3]
        if self.cameras.ndc is not None:
            spread = self.cameras.centers.std(dim=0)
            c2w[:, :3, 3] = eye + 0.5 * spread * torch.randn(n, 3, generator=generator)
            return c2w
        radius, elevation, azimuth = cartesian_to_spherical(eye - self.center)
        jitter = math.radians(self.jitter_angle_deg)
        radius = radius * (1 + self.jitter_radius * torch.randn(n, generator=generator))
        elevation = (elevation + jitter * torch.randn(n, generator=generator)).clamp(-1.45, 1.45)
        azimuth = azimuth + jitter * torch.randn(n, generator=generator)
        return look_at(self.center + spherical_to_cartesian(radius, elevation, azimuth), self.center)

    def bounds(self) -> tuple[float, float, float, float]:
        """The radii and elevations (radians) of the cameras, widened by twice the jitter:
        ``(r_min, r_max, elevation_min, elevation_max)``, where drawn poses fall."""
        radius, elevation, _ = cartesian_to_spherical(self.cameras.centers - self.center)
        jitter = 2 * math.radians(self.jitter_angle_deg)
        return (float(radius.min()) * (1 - 2 * self.jitter_radius), float(radius.max()) * (1 + 2 * self.jitter_radius),
                max(float(elevation.min()) - jitter, -1.45), min(float(elevation.max()) + jitter, 1.45))

    def perturb(self, c2w: Tensor, generator: torch.Generator | None = None, scale: float = 0.5) -> Tensor:
        """Poses near ``c2w`` [n, 4, 4]: each jittered by ``scale`` times the sampler's jitter,
        kept within ``bounds``.  # [n, 4, 4]

        Pose-level active learning perturbs copies of the worst views, and the copies can be the
        worst again: unbounded, such chains wander off to where the teacher was never seen from
        (below the ground, too close) and the student spends itself on those views. Measured on
        lego (hashgrid -> gaussians, 10 CPU minutes): unbounded, the held-out PSNR against the
        teacher peaked at 32.3 dB after 400 steps and fell to 27.4 by step 2,000."""
        n = c2w.shape[0]
        if self.cameras.ndc is not None:  # forward-facing: within the centres' box widened by their spread
            out = c2w.clone()
            centers = self.cameras.centers
            spread = centers.std(dim=0)
            moved = c2w[:, :3, 3] + scale * 0.5 * spread * torch.randn(n, 3, generator=generator)
            out[:, :3, 3] = torch.maximum(torch.minimum(moved, centers.max(0).values + spread), centers.min(0).values - spread)
            return out
        radius, elevation, azimuth = cartesian_to_spherical(c2w[:, :3, 3] - self.center)
        jitter = scale * math.radians(self.jitter_angle_deg)
        r_min, r_max, el_min, el_max = self.bounds()
        radius = (radius * (1 + scale * self.jitter_radius * torch.randn(n, generator=generator))).clamp(r_min, r_max)
        elevation = (elevation + jitter * torch.randn(n, generator=generator)).clamp(el_min, el_max)
        azimuth = azimuth + jitter * torch.randn(n, generator=generator)
        return look_at(self.center + spherical_to_cartesian(radius, elevation, azimuth), self.center)


def look_at_point(c2w: Tensor) -> Tensor:
    """The point nearest (least squares) to the optical axes of cameras ``c2w`` [N, 4, 4].  # [3]"""
    d = -c2w[:, :3, 2].double()
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[:, :3, 3].double()
    proj = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]  # [N, 3, 3]
    a = proj.sum(0)
    b = (proj @ o[:, :, None]).sum(0)[:, 0]
    if torch.linalg.matrix_rank(a) < 3:  # all axes parallel: fall back to the mean centre
        return o.mean(0).float()
    return torch.linalg.solve(a, b).float()


def orbit_poses(n: int, radius: float, elevation_deg: float = 30.0, center: tuple[float, float, float] = (0, 0, 0)) -> Tensor:
    """``n`` evenly spaced poses on a horizontal circle (a turntable).  # [n, 4, 4]"""
    azimuth = torch.arange(n, dtype=torch.float32) * (2 * math.pi / n)
    elevation = torch.full((n,), math.radians(elevation_deg))
    c = torch.tensor(center, dtype=torch.float32)
    return look_at(c + spherical_to_cartesian(torch.full((n,), radius), elevation, azimuth), c)


def with_poses(template: Cameras, c2w: Tensor) -> Cameras:
    """Cameras with the intrinsics of ``template``'s first camera and the given poses."""
    n = c2w.shape[0]
    return replace(template, c2w=c2w, fx=template.fx[:1].expand(n).clone(), fy=template.fy[:1].expand(n).clone(),
                   cx=template.cx[:1].expand(n).clone(), cy=template.cy[:1].expand(n).clone())


def framing_radius(aabb: Tensor) -> float:
    """Distance from the centre of ``aabb`` [2, 3] at which cameras frame the whole box: 1.2 diagonals."""
    return float((aabb[1] - aabb[0]).norm()) * 1.2


def pinhole_cameras(c2w: Tensor, resolution: int, fov_deg: float = 40.0) -> Cameras:
    """Square pinhole cameras at poses ``c2w`` [N, 4, 4] with field of view ``fov_deg``."""
    n = c2w.shape[0]
    f = torch.full((n,), 0.5 * resolution / math.tan(math.radians(fov_deg) / 2))
    c = torch.full((n,), resolution / 2)
    return Cameras(c2w, f, f.clone(), c, c.clone(), resolution, resolution)
