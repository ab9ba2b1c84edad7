"""Meshes: rasteriser speed, and the geometry of a hashgrid -> mesh conversion on the built-in scene.

Run (about 6 minutes on a 2-core CPU):
    python benchmarks/mesh.py                    # everything
    python benchmarks/mesh.py --only raster      # rasteriser speed only (the GPU suite runs this)

* raster: forward and forward+backward time of the triangle rasteriser (textured, anti-aliased)
  for a 100,000-face sphere filling most of a 256x256 frame, in faces per second; the PyTorch
  reference everywhere, nvdiffrast as well where it is installed on CUDA.
* builtin: a hashgrid trained on the built-in scene (48 views at 64x64, ``--train-seconds``),
  converted to a mesh in ``--budget`` seconds. The scene is analytic, so the geometry error is
  exact: the chamfer distance between the mesh and the true surface, in scene units and as % of
  the scene's size (the diagonal of its [-1, 1]^3 box). The true surface is taken where the
  cameras see it (points of the exact depth maps of the 8 held-out views; the underside of the
  slab is never seen): mesh -> surface is the true SDF at points sampled on the mesh's faces
  that lie in front of those cameras, surface -> mesh the distance from the depth-map points to
  the mesh. Also the mesh's PSNR against the teacher's renders and against the held-out photos.
Writes benchmarks/results/mesh_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import write_results  # noqa: E402

from radistill.cameras import look_at  # noqa: E402
from radistill.render.raster import nvdiffrast_available, rasterize  # noqa: E402
from radistill.render.splat import Camera  # noqa: E402


def uv_sphere(n_faces: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A UV sphere of about ``n_faces`` faces: vertices, faces and per-vertex UVs."""
    rings = int(math.sqrt(n_faces / 2))
    segs = n_faces // (2 * rings)
    th = torch.linspace(0, math.pi, rings + 1)
    ph = torch.linspace(0, 2 * math.pi, segs + 1)
    t, p = torch.meshgrid(th, ph, indexing="ij")
    v = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    uv = torch.stack([p / (2 * math.pi), t / math.pi], -1).reshape(-1, 2)
    i, j = torch.meshgrid(torch.arange(rings), torch.arange(segs), indexing="ij")
    a = (i * (segs + 1) + j).reshape(-1)
    b, c, d = a + 1, a + segs + 1, a + segs + 2
    faces = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)])
    return v, faces, uv


def raster_records(device: str, n: int = 100_000, size: int = 256, repeats: int = 3) -> list[dict]:
    v, faces, uv = uv_sphere(n)
    tex = torch.rand(512, 512, 3, generator=torch.Generator().manual_seed(0))
    v, faces, uv, tex = v.to(device), faces.to(device), uv.to(device), tex.to(device)
    c2w = look_at(torch.tensor([[0.0, -3.0, 0.5]]), torch.zeros(3))[0].to(device)
    cam = Camera(c2w, 1.1 * size, 1.1 * size, size / 2, size / 2, size, size)
    backends = ["torch"] + (["nvdiffrast"] if device == "cuda" and nvdiffrast_available() else [])
    records = []
    for backend in backends:
        times, img = common.forward_backward_seconds(
            lambda vv, tt: rasterize(vv, faces, cam, tt, uv, faces, None, torch.ones(3, device=device),
                                     backend=backend), [v, tex], device)
        covered = int((img.opacity > 0).sum())
        records.append({"id": f"mesh/raster/{backend}/{faces.shape[0]}@{size}",
                        "params": {"faces": int(faces.shape[0]), "size": f"{size}x{size}", "backend": backend,
                                   "texture": "512x512", "antialias": True, "device": device},
                        "metrics": {"forward_s": round(times["forward"], 4),
                                    "forward_backward_s": round(times["forward+backward"], 4),
                                    "faces_per_s": round(faces.shape[0] / times["forward"]),
                                    "covered_pixels": covered}})
        print(f"{backend}: {faces.shape[0]} faces at {size}x{size}: forward {times['forward'] * 1e3:.1f} ms, "
              f"forward+backward {times['forward+backward'] * 1e3:.1f} ms", flush=True)
    return records


def chamfer_to_truth(mesh, scene, n_samples: int = 200_000) -> dict[str, float]:
    """Chamfer distance between the mesh and the analytic surface the held-out views see."""
    from radistill.datasets.procedural import scene_sdf
    from radistill.fields.mesh_volume import MeshVolume

    _, cams = scene.split("test")
    depth = scene.extras["depth"][scene.test_indices]
    truth = []
    for k in range(len(cams)):
        rays = cams.image_rays(k)
        d = depth[k].reshape(-1)
        hit = d > 0
        truth.append(rays.origins[hit] + d[hit, None] * rays.directions[hit])
    truth = torch.cat(truth)
    vertices, faces = mesh.vertices.detach().cpu(), mesh.faces.cpu()
    corners = vertices[faces]
    area = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)
    g = torch.Generator().manual_seed(0)
    tri = torch.multinomial(area, n_samples, replacement=True, generator=g)
    uv = torch.rand(n_samples, 2, generator=g)
    flip = uv.sum(-1) > 1
    uv[flip] = 1 - uv[flip]
    bary = torch.stack([1 - uv.sum(-1), uv[:, 0], uv[:, 1]], -1)
    samples = (bary[..., None] * corners[tri]).sum(1)
    # mesh -> surface only where the held-out cameras could see: samples near the seen surface's
    # region (within 0.1 of a depth-map point), so the unseen underside does not count
    from scipy.spatial import cKDTree

    near_seen = torch.from_numpy(cKDTree(truth.numpy()).query(samples.numpy(), k=1)[0]).float() < 0.1
    to_surface = scene_sdf(samples[near_seen].double())[0].abs().float()
    volume = MeshVolume(vertices, faces, mesh.aabb.cpu(), 64)
    to_mesh, _, _ = volume.closest(truth)
    size = float((torch.tensor([2.0, 2.0, 2.0])).norm())
    chamfer = 0.5 * (float(to_surface.mean()) + float(to_mesh.mean()))
    return {"chamfer": round(chamfer, 5), "chamfer_pct": round(100 * chamfer / size, 3),
            "mesh_to_surface": round(float(to_surface.mean()), 5), "surface_to_mesh": round(float(to_mesh.mean()), 5),
            "surface_points": int(truth.shape[0]), "mesh_samples": int(near_seen.sum())}


def builtin_records(train_seconds: float, budget: float) -> list[dict]:
    from radistill.conversion import ConvertConfig, compare_on_views, convert
    from radistill.datasets.procedural import make_builtin_scene
    from radistill.demo import DEMO_HASHGRID
    from radistill.distill.engine import TrainConfig, train
    from radistill.distill.teachers import FieldTeacher, ImageTeacher
    from radistill.evaluate import evaluate_split
    from radistill.fields import create_field

    scene = make_builtin_scene(n_train=48, n_test=8, resolution=64)
    torch.manual_seed(0)
    field = create_field("hashgrid", scene.aabb, **DEMO_HASHGRID)
    train(field, ImageTeacher.from_scene(scene), TrainConfig(steps=100_000, max_seconds=train_seconds, batch_rays=4096,
                                                             target_samples=1 << 16, progress=False))
    teacher_ev = evaluate_split(field, scene, "test")
    teacher = FieldTeacher(field, scene.cameras[scene.train_indices], scene.background)
    t0 = time.perf_counter()
    result = convert(teacher, "mesh", ConvertConfig(max_seconds=budget, progress=False, checkpoint_every=0,
                                                    report_views=0))
    wall = time.perf_counter() - t0
    mesh = result.student
    ev = evaluate_split(mesh, scene, "test")
    vs_teacher = compare_on_views(mesh, teacher, 8)["psnr_vs_teacher"]
    geometry = chamfer_to_truth(mesh, scene)
    record = {"id": "mesh/builtin/hashgrid->mesh",
              "params": {"scene": "builtin 64x64, 48 train + 8 held-out views", "teacher_train_s": train_seconds,
                         "budget_s": budget, "mesh": mesh.config_dict()},
              "metrics": {**geometry, "faces": int(mesh.faces.shape[0]), "psnr": round(ev["psnr"], 3),
                          "psnr_teacher": vs_teacher, "teacher_heldout_psnr": round(teacher_ev["psnr"], 3),
                          "seconds": round(result.train.seconds, 1), "wall_s": round(wall, 1),
                          "steps": result.train.steps}}
    m = record["metrics"]
    print(f"builtin hashgrid ({m['teacher_heldout_psnr']:.2f} dB) -> mesh: chamfer {m['chamfer']:.4f} "
          f"({m['chamfer_pct']:.2f}% of the scene), {m['psnr_teacher']:.2f} dB vs teacher, {m['psnr']:.2f} dB held-out",
          flush=True)
    return [record]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["raster", "builtin"], default=["raster", "builtin"])
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    common.GIT_AT_START = common.git_commit()
    if args.out is not None:
        common.RESULTS = args.out
    device = "cuda" if torch.cuda.is_available() else "cpu"
    records = []
    if "raster" in args.only:
        records += raster_records(device)
    if "builtin" in args.only:
        records += builtin_records(args.train_seconds, args.budget)
    if not args.no_write:
        cols = [("forward s", "forward_s"), ("fwd+bwd s", "forward_backward_s"), ("faces/s", "faces_per_s"),
                ("chamfer", "chamfer"), ("chamfer %", "chamfer_pct"), ("PSNR vs teacher", "psnr_teacher"),
                ("held-out PSNR", "psnr"), ("teacher held-out", "teacher_heldout_psnr"), ("wall s", "wall_s")]
        print("wrote", write_results(f"mesh_{device}", "Meshes: rasteriser speed, geometry on the built-in scene",
                                     records, cols))


if __name__ == "__main__":
    main()
