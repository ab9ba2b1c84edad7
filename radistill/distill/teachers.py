"""Teachers: what the engine learns from.

An ``ImageTeacher`` (posed photos) can answer only ray-level colour, and only for rays of its
own cameras; a ``FieldTeacher`` (any trained representation) answers point queries and renders
any pose, so views are unlimited.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from radistill.cameras import (Cameras, LikeCamerasSampler, Rays, SphereSampler, framing_radius, orbit_poses, pinhole_cameras,
                               with_poses)
from radistill.fields.base import FieldOutputs, Representation
from radistill.fields.neural import RAW_MIN


@dataclass
class RayBatch:
    rays: Rays
    rgb: Tensor  # [R, 3] target colour


class ImageTeacher:
    """Posed photos as a teacher: random pixels of random training images.

    Example:
        >>> teacher = ImageTeacher.from_scene(scene)
        >>> batch = teacher.sample(4096, torch.Generator().manual_seed(0))
    """

    def __init__(self, images: Tensor, cameras: Cameras, background: Tensor) -> None:
        if images.shape[0] != len(cameras) or images.shape[1:3] != (cameras.height, cameras.width):
            raise ValueError(f"images {list(images.shape)} do not match {len(cameras)} cameras of "
                             f"{cameras.width}x{cameras.height}")
        self.images = images  # [N, H, W, 3]
        self.cameras = cameras
        self.background = background  # [3]

    @classmethod
    def from_scene(cls, scene, split: str = "train") -> "ImageTeacher":
        images, cameras = scene.split(split)
        return cls(images, cameras, scene.background)

    def sample(self, n: int, generator: torch.Generator | None = None) -> RayBatch:
        """``n`` rays through random pixel centres of random images, with their colours."""
        cam = torch.randint(len(self.cameras), (n,), generator=generator)
        py = torch.randint(self.cameras.height, (n,), generator=generator)
        px = torch.randint(self.cameras.width, (n,), generator=generator)
        rays = self.cameras.rays_for_pixels(cam, px.float() + 0.5, py.float() + 0.5)
        return RayBatch(rays, self.images[cam, py, px])


class FieldTeacher:
    """A trained representation as a teacher: it answers point and ray questions anywhere.

    Poses are drawn like the cameras the teacher was trained with (stored in its checkpoint),
    or on a sphere around its aabb when those are unknown; views use those cameras'
    intrinsics. The teacher is never modified.

    Example:
        >>> teacher = FieldTeacher.from_checkpoint("outputs/demo/hashgrid.safetensors")
        >>> c2w = teacher.sample_poses(8, torch.Generator().manual_seed(0))
    """

    def __init__(self, field: Representation, cameras: Cameras | None = None, background: Tensor | None = None) -> None:
        self.field = field  # queried under no_grad; left as the caller passed it
        self.background = torch.ones(3) if background is None else torch.as_tensor(background, dtype=torch.float32)
        if cameras is None:
            cameras = default_cameras(field.aabb.detach().cpu())
            center = ((field.aabb[0] + field.aabb[1]) / 2).detach().cpu()
            radius = framing_radius(field.aabb.detach().cpu())
            self.sampler = SphereLikeSampler(cameras, center=center, radius=radius)
        else:
            self.sampler = LikeCamerasSampler(cameras)
        self.cameras = cameras

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "FieldTeacher":
        from radistill.io.checkpoint import (background_from_metadata, cameras_from_metadata, field_from_checkpoint,
                                             read_checkpoint)

        from radistill.io.mesh import MESH_SUFFIXES, is_mesh_file, load_mesh
        from radistill.io.instant_ngp import INSTANT_NGP_SUFFIXES
        from radistill.io.tensorf import TENSORF_SUFFIXES

        suffix = Path(path).suffix.lower()
        if Path(path).is_dir():  # a nerfstudio run folder
            from radistill.io.nerfstudio import load_nerfstudio_run, training_cameras

            return cls(load_nerfstudio_run(path).to(device), training_cameras(path))
        if suffix in TENSORF_SUFFIXES:  # other programs' checkpoints: no cameras saved
            from radistill.io.tensorf import load_tensorf

            return cls(load_tensorf(path).to(device))
        if suffix in INSTANT_NGP_SUFFIXES:
            from radistill.io.instant_ngp import load_instant_ngp

            return cls(load_instant_ngp(path).to(device))
        if suffix in (*MESH_SUFFIXES, ".splat"):  # exchange files: no cameras, no background saved
            if is_mesh_file(path):
                return cls(load_mesh(path).to(device))
            from radistill.io.ply import load_gaussians

            return cls(load_gaussians(path).to(device))
        tensors, meta = read_checkpoint(path)
        field = field_from_checkpoint(tensors, meta, path, device)
        return cls(field, cameras_from_metadata(meta, path), background_from_metadata(meta, path))

    @property
    def kind(self) -> str:
        return self.field.kind

    @property
    def teaches_by_renders(self) -> bool:
        """Whether students learn the teacher's own renders (``ViewRenders``) instead of its
        point answers: Gaussians, whose volumetric view only approximates what they draw."""
        return not getattr(self.field, "volumetric_view_teaches", True)

    def at_view_size(self, size: int | None) -> "FieldTeacher":
        """The same teacher, its views no larger than ``size`` pixels on their longest side
        (poses are drawn as before); itself when they already are, or ``size`` is None."""
        longest = max(self.cameras.width, self.cameras.height)
        if size is None or longest <= size:
            return self
        smaller = copy.copy(self)
        smaller.cameras = self.cameras.scaled(size / longest)
        return smaller

    def sample_poses(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # [n, 4, 4]
        return self.sampler.sample(n, generator)

    def perturb_poses(self, c2w: Tensor, generator: torch.Generator | None = None) -> Tensor:  # [n, 4, 4]
        return self.sampler.perturb(c2w, generator)

    def views(self, c2w: Tensor) -> Cameras:
        """Cameras with the teacher's intrinsics at poses ``c2w`` [n, 4, 4]."""
        return with_poses(self.cameras, c2w)

    @torch.no_grad()
    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        """The teacher's volume view at ``x`` [N, 3] along ``d`` [N, 3]: zero density (and the
        lowest raw log-density in the junction) where its renderer skips space."""
        out = self.field.query(x, d)
        empty = self.field.empty_mask(x)
        if empty is None:
            return out
        sigma = torch.where(empty, torch.zeros_like(out.sigma), out.sigma)
        junction = out.junction
        if junction is not None:
            junction = junction.clone()
            junction[:, 0] = torch.where(empty, torch.full_like(junction[:, 0], RAW_MIN), junction[:, 0])
        return FieldOutputs(sigma, out.rgb, junction)


class ViewRenders:
    """The teacher's own renders of the views of a ``ViewPool``, made on first use and kept
    until the view is replaced (``forget``); never saved, since they can be made again.

    Example:
        >>> renders = ViewRenders(teacher, pool)
        >>> rgb = renders.colors(view, px, py)  # the teacher's colour of those pixels
    """

    def __init__(self, teacher: FieldTeacher, pool) -> None:
        self.teacher = teacher
        self.pool = pool
        cams = teacher.cameras
        size = pool.c2w.shape[0]
        self.images = torch.zeros(size, cams.height, cams.width, 3)  # [V, H, W, 3]
        self.ready = torch.zeros(size, dtype=torch.bool)

    def image(self, view: int) -> Tensor:
        """The teacher's render of pool view ``view``.  # [H, W, 3]"""
        if not bool(self.ready[view]):
            field = self.teacher.field
            with torch.no_grad():
                out = field.render_image(self.teacher.views(self.pool.c2w[view:view + 1]), 0,
                                         self.teacher.background.to(field.aabb.device))
            self.images[view] = out["rgb"].detach().clamp(0, 1).cpu()
            self.ready[view] = True
        return self.images[view]

    def colors(self, view: Tensor, px: Tensor, py: Tensor) -> Tensor:
        """The teacher's colours of pixels (``px``, ``py``) of pool views ``view``.  # [n, 3]"""
        for v in torch.unique(view).tolist():
            self.image(v)
        return self.images[view, py, px]

    def renew(self, generator: torch.Generator, hard_fraction: float) -> None:
        """Replace a sixteenth of the pool's views (``ViewPool.replace``: ``hard_fraction`` of
        them perturbed copies of the worst) and drop their renders: each view costs a render, so
        most of the pool is kept, where a volumetric teacher's pool is renewed whole."""
        self.forget(self.pool.replace(generator, max(1, self.pool.c2w.shape[0] // 16), hard_fraction))

    def forget(self, slots: Tensor | None = None) -> None:
        """Drop the renders of replaced views (all of them when ``slots`` is None)."""
        if slots is None:
            self.ready.zero_()
        else:
            self.ready[slots] = False


def default_cameras(aabb: Tensor, resolution: int = 100, fov_deg: float = 40.0) -> Cameras:
    """A pinhole camera that frames ``aabb`` from 1.2 diagonals away (for teachers without cameras)."""
    center = (aabb[0] + aabb[1]) / 2
    return pinhole_cameras(orbit_poses(8, framing_radius(aabb), 30.0, tuple(center.tolist())), resolution, fov_deg)


@dataclass
class SphereLikeSampler(LikeCamerasSampler):
    """Poses all around the aabb (elevation above -30 degrees), for teachers without cameras."""

    radius: float = 4.0

    def bounds(self) -> tuple[float, float, float, float]:
        return self.radius, self.radius, math.radians(-30.0), 1.45

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # [n, 4, 4]
        center = tuple(float(c) for c in self.center)
        return SphereSampler(self.radius, center, hemisphere=False, min_elevation_deg=-30.0).sample(n, generator)
