"""Gaussians: rasteriser speed, and the real donut scene imported, rendered, exported and converted.

Run (about 6 minutes on a 2-core CPU):
    python benchmarks/gaussians.py                      # everything
    python benchmarks/gaussians.py --only raster         # rasteriser speed only (the GPU suite runs this)

* raster: forward and forward+backward time of the rasteriser for 100,000 Gaussians at 256x256
  (a random cloud filling a third of the frame), in Gaussians per second; the PyTorch reference
  everywhere, gsplat as well on CUDA.
* donut: ../shared/data/splats/donut_fused.ply (45,624 Gaussians, SH degree 0) imported, an
  orbit of 8 views rendered (montage in results/donut_orbit.png), exported and re-imported
  (identical tensors), then converted to a hashgrid in ``--budget`` seconds (the conversion
  draws random poses all around the scene); the hashgrid's renders are compared with the
  Gaussian renders on 8 orbit views it never trained on (elevation 20 degrees, azimuths
  between the montage's). Target: >= 30 dB.
Writes benchmarks/results/gaussians_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import DATA, RESULTS, write_results  # noqa: E402

from radistill.cameras import framing_radius, look_at, orbit_poses, with_poses  # noqa: E402
from radistill.render.splat import Camera, rasterize  # noqa: E402


def raster_records(device: str, n: int = 100_000, size: int = 256, repeats: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(n, 3, generator=g) * 0.6, torch.randn(n, 4, generator=g),
              torch.rand(n, 3, generator=g) * 0.02 + 0.002, torch.rand(n, generator=g), torch.rand(n, 3, generator=g)]
    params = [p.to(device) for p in params]
    c2w = look_at(torch.tensor([[0.0, -4.0, 0.0]]), torch.zeros(3))[0].to(device)
    cam = Camera(c2w, 300.0 * size / 256, 300.0 * size / 256, size / 2, size / 2, size, size)
    from radistill.render.splat import gsplat_available

    backends = ["torch"] + (["gsplat"] if device == "cuda" and gsplat_available() else [])
    records = []
    for backend in backends:
        times, _ = common.forward_backward_seconds(
            lambda *ps: rasterize(*ps, cam, torch.ones(3, device=device), backend=backend), params, device)
        records.append({"id": f"raster/{backend}/{n}x{size}", "params": {"gaussians": n, "res": f"{size}x{size}",
                                                                        "backend": backend, "device": device},
                        "metrics": {"forward_s": round(times["forward"], 4),
                                    "gaussians_per_s": round(n / times["forward"]),
                                    "fwd_bwd_s": round(times["forward+backward"], 4),
                                    "fwd_bwd_gaussians_per_s": round(n / times["forward+backward"])}})
        print(records[-1]["id"], records[-1]["metrics"], flush=True)
    return records


def orbit(field, n: int, elevation: float, width: int, template):
    center = tuple(((field.aabb[0] + field.aabb[1]) / 2).tolist())
    cams = with_poses(template, orbit_poses(n, framing_radius(field.aabb), elevation, center))
    return cams.scaled(width / template.width) if width != template.width else cams


def donut_records(budget: float) -> list[dict]:
    from radistill.conversion import ConvertConfig, convert
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher
    from radistill.evaluate import render_image, save_png
    from radistill.io.ply import load_gaussians, save_gaussians
    from radistill.metrics import psnr

    path = DATA / "splats" / "donut_fused.ply"
    t0 = time.perf_counter()
    field = load_gaussians(path)
    load_s = time.perf_counter() - t0
    teacher = FieldTeacher(field)
    bg = teacher.background
    views = orbit(field, 8, 30.0, 128, teacher.cameras)
    t0 = time.perf_counter()
    frames = [render_image(field, views, k, bg)["rgb"] for k in range(len(views))]
    render_s = (time.perf_counter() - t0) / len(views)
    save_png(RESULTS / "donut_orbit.png", torch.cat([torch.cat(frames[:4], 1), torch.cat(frames[4:], 1)], 0))
    with tempfile.TemporaryDirectory() as tmp:
        back = load_gaussians(save_gaussians(Path(tmp) / "donut.ply", field))
    identical = all(torch.equal(getattr(back, k), getattr(field, k))
                    for k in ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN"))
    records = [{"id": "donut/import", "params": {"file": "splats/donut_fused.ply", "orbit": "8 views 128x128"},
                "metrics": {"gaussians": len(field), "sh_degree": field.config.sh_degree, "load_s": round(load_s, 3),
                            "render_s_per_view": round(render_s, 3), "ply_round_trip_identical": identical}}]
    print(records[-1]["metrics"], flush=True)

    preset = {"log2_table": 17, "max_resolution": 512, "samples_per_ray": 256}
    config = ConvertConfig(distill=DistillConfig(stage_steps=(10_000, 20_000, 50_000)), max_seconds=budget,
                           checkpoint_every=0, progress=False, report_views=0)
    result = convert(teacher, "hashgrid", config, preset)
    held_out = orbit(field, 16, 20.0, 100, teacher.cameras)[list(range(1, 16, 2))]  # azimuths between the montage's
    scores = [psnr(render_image(result.student, held_out, k, bg)["rgb"], render_image(field, held_out, k, bg)["rgb"])
              for k in range(len(held_out))]
    records.append({"id": "convert/donut/gaussians->hashgrid",
                    "params": {"budget_s": budget, "preset": preset, "heldout": "8 orbit views, elevation 20, 100x100"},
                    "metrics": {"psnr_vs_gaussians": round(sum(scores) / len(scores), 3),
                                "min_view_psnr": round(min(scores), 3), "seconds": round(result.train.seconds, 1),
                                "steps": result.train.steps}})
    print(records[-1]["id"], records[-1]["metrics"], flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["raster", "donut"], default=["raster", "donut"])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of the donut -> hashgrid conversion")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    common.GIT_AT_START = common.git_commit()
    if args.out is not None:
        common.RESULTS = args.out
    device = "cuda" if torch.cuda.is_available() else "cpu"
    records = []
    if "raster" in args.only:
        records += raster_records(device)
    if "donut" in args.only:
        records += donut_records(args.budget)
    cols = [("Gaussians/s fwd", "gaussians_per_s"), ("Gaussians/s fwd+bwd", "fwd_bwd_gaussians_per_s"),
            ("PSNR vs Gaussians", "psnr_vs_gaussians"), ("seconds", "seconds"), ("Gaussians", "gaussians")]
    print("wrote", write_results(f"gaussians_{device}", "gaussians", records, cols))


if __name__ == "__main__":
    main()
