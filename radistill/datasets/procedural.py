"""The built-in scene: analytic primitives rendered exactly by sphere tracing.

A checkered slab carries a red and a yellow glossy sphere (view-dependent highlights), a blue
box and a green torus, all inside the cube ``[-1, 1]^3``. The scene is defined by a signed
distance function, so its true surface, depth and normals are known: that makes it the
fixture for fast tests and the default scene of ``radistill demo``. Nothing is downloaded.

Example:
    >>> scene = make_builtin_scene(n_train=32, n_test=4, resolution=48)
    >>> write_builtin_scene("outputs/builtin")  # NeRF Blender format on disk
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radistill.cameras import Cameras, look_at, spherical_to_cartesian
from radistill.datasets.scene import SceneData

LIGHT_DIR = torch.tensor([0.4, 0.3, 1.0]) / math.sqrt(0.4**2 + 0.3**2 + 1.0)
AABB = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
BACKGROUND = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Primitive:
    shape: str  # "sphere" | "box" | "torus"
    center: tuple[float, float, float]
    size: tuple[float, ...]  # sphere: (r,); box: half extents; torus: (major, minor)
    color: tuple[float, float, float]
    specular: float = 0.0
    checker: bool = False


PRIMITIVES = (
    Primitive("box", (0.0, 0.0, -0.7), (0.85, 0.85, 0.1), (0.85, 0.8, 0.7), checker=True),
    Primitive("sphere", (-0.35, -0.3, -0.25), (0.35,), (0.85, 0.15, 0.1), specular=0.6),
    Primitive("box", (0.42, -0.28, -0.38), (0.22, 0.22, 0.22), (0.15, 0.3, 0.85)),
    Primitive("torus", (0.1, 0.45, -0.48), (0.32, 0.1), (0.2, 0.7, 0.25)),
    Primitive("sphere", (0.45, 0.35, 0.05), (0.17,), (0.95, 0.8, 0.15), specular=0.8),
)


def primitive_sdf(p: Tensor, prim: Primitive) -> Tensor:
    """Signed distance to one primitive.  # [N]"""
    q = p - torch.tensor(prim.center, dtype=p.dtype)
    if prim.shape == "sphere":
        return q.norm(dim=-1) - prim.size[0]
    if prim.shape == "box":
        d = q.abs() - torch.tensor(prim.size, dtype=p.dtype)
        return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)
    major, minor = prim.size
    ring = torch.stack([q[:, :2].norm(dim=-1) - major, q[:, 2]], -1)
    return ring.norm(dim=-1) - minor


def scene_sdf(p: Tensor) -> tuple[Tensor, Tensor]:
    """Distance to the scene and the index of the nearest primitive.  # [N], [N]"""
    d = torch.stack([primitive_sdf(p, prim) for prim in PRIMITIVES], -1)
    return d.min(dim=-1)


def scene_normal(p: Tensor, eps: float = 1e-4) -> Tensor:
    """Unit normals by central differences of the SDF.  # [N, 3]"""
    offsets = torch.eye(3, dtype=p.dtype) * eps
    grad = torch.stack([scene_sdf(p + o)[0] - scene_sdf(p - o)[0] for o in offsets], -1)
    return grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def shade(p: Tensor, normal: Tensor, viewdir: Tensor, prim_idx: Tensor) -> Tensor:
    """Lambert plus Blinn-Phong highlights: the colour leaving ``p`` towards the camera.  # [N, 3]"""
    albedo = torch.tensor([prim.color for prim in PRIMITIVES], dtype=p.dtype)[prim_idx]
    checker = torch.tensor([prim.checker for prim in PRIMITIVES])[prim_idx]
    squares = ((torch.floor(p[:, 0] * 4) + torch.floor(p[:, 1] * 4)) % 2 == 0).to(p.dtype)
    albedo = torch.where(checker[:, None], albedo * (0.55 + 0.45 * squares[:, None]), albedo)
    light = LIGHT_DIR.to(p.dtype)
    diffuse = (normal @ light).clamp(min=0)
    half = light - viewdir
    half = half / half.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    ks = torch.tensor([prim.specular for prim in PRIMITIVES], dtype=p.dtype)[prim_idx]
    spec = ks * (normal * half).sum(-1).clamp(min=0) ** 40
    return (albedo * (0.35 + 0.65 * diffuse[:, None]) + spec[:, None]).clamp(0, 1)


def sphere_trace(origins: Tensor, dirs: Tensor, far: float = 10.0, iterations: int = 128,
                 eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """March every ray to its first surface hit.

    Returns:
        t: distance along the (unit) ray to the hit.  # [R]
        hit: whether the ray hit a surface before ``far``.  # [R] bool
    """
    t = torch.zeros(origins.shape[0], dtype=origins.dtype)
    active = torch.ones_like(t, dtype=torch.bool)
    hit = torch.zeros_like(active)
    for _ in range(iterations):
        if not active.any():
            break
        idx = active.nonzero()[:, 0]
        d, _ = scene_sdf(origins[idx] + t[idx, None] * dirs[idx])
        t[idx] += d
        converged = d.abs() < eps
        escaped = t[idx] > far
        hit[idx[converged]] = True
        active[idx[converged | escaped]] = False
    return t, hit & (t < far)


def render_exact(cameras: Cameras, index: int, background: Tensor) -> dict[str, Tensor]:
    """Exact RGBA, depth (distance along the ray) and normals of one view (float64 inside)."""
    rays = cameras.image_rays(index)
    o, d = rays.origins.double(), rays.directions.double()
    t, hit = sphere_trace(o, d)
    h, w = cameras.height, cameras.width
    rgb = background.double().expand(o.shape[0], 3).clone()
    normal = torch.zeros_like(o)
    if hit.any():
        p = o[hit] + t[hit, None] * d[hit]
        n = scene_normal(p)
        _, prim_idx = scene_sdf(p)
        rgb[hit] = shade(p, n, d[hit], prim_idx)
        normal[hit] = n
    depth = torch.where(hit, t, torch.zeros_like(t))
    return {
        "rgb": rgb.float().reshape(h, w, 3), "alpha": hit.float().reshape(h, w),
        "depth": depth.float().reshape(h, w), "normal": normal.float().reshape(h, w, 3),
    }


def builtin_poses(n: int, radius: float = 2.9, offset: float = 0.0) -> Tensor:
    """Evenly spread poses on the upper hemisphere (a Fibonacci spiral), looking at the origin."""
    i = torch.arange(n, dtype=torch.float64) + 0.5 + offset
    elevation = torch.asin(torch.sin(torch.tensor(math.radians(10.0))) + (i / n) * (math.sin(math.radians(70.0)) - math.sin(math.radians(10.0))))
    azimuth = i * math.pi * (3.0 - math.sqrt(5.0))
    eye = spherical_to_cartesian(torch.full((n,), radius, dtype=torch.float64), elevation, azimuth)
    return look_at(eye.float(), torch.zeros(3))


def builtin_cameras(c2w: Tensor, resolution: int, fov_deg: float = 45.0) -> Cameras:
    focal = 0.5 * resolution / math.tan(0.5 * math.radians(fov_deg))
    return Cameras(c2w, torch.tensor(focal), torch.tensor(focal), torch.tensor(resolution / 2.0),
                   torch.tensor(resolution / 2.0), resolution, resolution)


def make_builtin_scene(n_train: int = 48, n_test: int = 8, resolution: int = 64) -> SceneData:
    """Render the built-in scene into memory (train views, then test views between them)."""
    c2w = torch.cat([builtin_poses(n_train), builtin_poses(n_test, offset=0.5)])
    cams = builtin_cameras(c2w, resolution)
    bg = torch.tensor(BACKGROUND)
    views = [render_exact(cams, i, bg) for i in range(len(cams))]
    stack = {k: torch.stack([v[k] for v in views]) for k in views[0]}
    n = n_train + n_test
    return SceneData("builtin", stack["rgb"], cams, list(range(n_train)), list(range(n_train, n)),
                     torch.tensor(AABB), bg, stack["alpha"], {"depth": stack["depth"], "normal": stack["normal"]}, "file")


def write_builtin_scene(out_dir: str | Path, n_train: int = 48, n_test: int = 8, resolution: int = 64) -> Path:
    """Write the built-in scene in NeRF Blender format, with depth and normal maps (.npy)."""
    import imageio.v3 as iio

    out = Path(out_dir)
    scene = make_builtin_scene(n_train, n_test, resolution)
    fov = 2 * math.atan(0.5 * resolution / float(scene.cameras.fx[0]))
    for split, indices in (("train", scene.train_indices), ("test", scene.test_indices)):
        (out / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for k, i in enumerate(indices):
            rgba = torch.cat([scene.images[i], scene.alphas[i, ..., None]], -1)
            # straight (not premultiplied) RGBA: the surface colour where covered
            iio.imwrite(out / split / f"r_{k}.png", (rgba.numpy() * 255 + 0.5).astype(np.uint8))
            np.save(out / split / f"r_{k}_depth.npy", scene.extras["depth"][i].numpy())
            np.save(out / split / f"r_{k}_normal.npy", scene.extras["normal"][i].numpy())
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": scene.cameras.c2w[i].tolist(),
                           "depth_file_path": f"./{split}/r_{k}_depth.npy", "normal_file_path": f"./{split}/r_{k}_normal.npy"})
        meta = {"camera_angle_x": fov, "aabb": [list(AABB[0]), list(AABB[1])], "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    return out
