"""Train each neural kind from photos for a fixed CPU budget and measure held-out quality.

Run (about 10 minutes per kind):
    python benchmarks/train.py --scene lego
    python benchmarks/train.py --scene fern --kinds hashgrid

lego: ../shared/data/nerf_synthetic/lego at 100x100 (downscale 8), white background;
fern: ../shared/data/llff/fern at 504x378 (images_8), NDC. Both hold out ``i % 8 == 0``.
Writes benchmarks/results/train_lego_cpu.json and .md for both scenes (records merge by id).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import DATA, write_results  # noqa: E402

from radistill.datasets import load_scene  # noqa: E402
from radistill.distill.engine import TrainConfig, train  # noqa: E402
from radistill.distill.teachers import ImageTeacher  # noqa: E402
from radistill.evaluate import evaluate_split  # noqa: E402
from radistill.fields import create_field  # noqa: E402
from radistill.io.checkpoint import save_field  # noqa: E402

SCENES = {
    "lego": {"path": DATA / "nerf_synthetic" / "lego", "downscale": 8},
    "fern": {"path": DATA / "llff" / "fern", "downscale": 1},
}

# CPU presets: sized so that a 2-core CPU makes enough steps in the budget
PRESETS = {
    "hashgrid": {"log2_table": 17, "max_resolution": 512, "samples_per_ray": 256},
    "tensorf-vm": {"samples_per_ray": 256},
    "tensorf-cp": {"samples_per_ray": 256, "density_components": 48, "app_components": 96},
    "mlp": {"samples_per_ray": 192},
}
BATCH = {"hashgrid": 4096, "tensorf-vm": 4096, "tensorf-cp": 2048, "mlp": 1024}


def run(scene_name: str, kind: str, budget: float, out_dir: Path, seed: int = 0) -> dict:
    info = SCENES[scene_name]
    scene = load_scene(info["path"], downscale=info["downscale"])
    torch.manual_seed(seed)
    preset = dict(PRESETS[kind])
    field = create_field(kind, scene.aabb, **preset)
    cfg = TrainConfig(steps=1_000_000, max_seconds=budget, batch_rays=BATCH[kind], seed=seed, checkpoint_every=0)
    result = train(field, ImageTeacher.from_scene(scene), cfg)
    # keep the trained field (with its camera distribution) as a teacher for conversion benchmarks
    save_field(out_dir / f"{scene_name}_{kind}.safetensors", field, extra_metadata={
        "cameras": scene.cameras[scene.train_indices].to_dict(), "background": scene.background.tolist(),
        "scene": scene_name})
    t0 = time.perf_counter()
    ev = evaluate_split(field, scene, "test", save_dir=out_dir / f"{scene_name}_{kind}")
    print(f"{scene_name}/{kind}: {result.steps} steps in {result.seconds:.0f}s, held-out PSNR {ev['psnr']:.2f} "
          f"SSIM {ev['ssim']:.3f} (eval {time.perf_counter() - t0:.0f}s)")
    h, w = scene.cameras.height, scene.cameras.width
    return {
        "id": f"train/{scene_name}/{kind}",
        "params": {"res": f"{w}x{h}", "holdout": scene.holdout, "budget_s": budget, "batch_rays": BATCH[kind],
                   "preset": preset, "seed": seed},
        "metrics": {"psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4), "steps": result.steps,
                    "samples_per_s": round(result.samples_per_s), "seconds": round(result.seconds, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", choices=sorted(SCENES), default="lego")
    parser.add_argument("--kinds", nargs="+", default=["hashgrid", "tensorf-vm", "tensorf-cp", "mlp"])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per kind")
    parser.add_argument("--renders", type=Path, default=Path("outputs/bench_train"),
                        help="where test renders and the trained fields (<scene>_<kind>.safetensors) go")
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch results/")
    args = parser.parse_args()
    common.GIT_AT_START = common.git_commit()
    records = [run(args.scene, kind, args.budget, args.renders) for kind in args.kinds]
    if not args.no_write:
        cols = [("PSNR", "psnr"), ("SSIM", "ssim"), ("steps", "steps"), ("samples/s", "samples_per_s"),
                ("seconds", "seconds"), ("resolution", "res"), ("hold-out", "holdout")]
        # both scenes go to one file (records are keyed by id), as the foundation issue asks
        path = write_results("train_lego_cpu", "train", records, cols)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
