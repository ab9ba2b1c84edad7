"""``radistill demo``: the main job end to end on the built-in scene.

Builds the procedural scene (written to disk in NeRF Blender format and read back), trains a
``hashgrid`` field from its photos, evaluates it on the held-out views, renders a turntable,
converts the hashgrid to every other kind (no photos needed), converts the Gaussians and the
mesh back to a hashgrid, and prints a results table. Everything lands in the output folder:

    outputs/demo/scene/              the built-in scene (transforms_*.json, PNG, depth/normal .npy)
    outputs/demo/hashgrid.safetensors  the trained field
    outputs/demo/convert_<kind>/     each conversion (<kind>.safetensors, report.json)
    outputs/demo/scene.ply           the Gaussians as a 3DGS PLY (for any splat viewer)
    outputs/demo/scene.glb           the textured mesh as glTF 2.0 (for Blender, game engines, the web)
    outputs/demo/convert_<gaussians|mesh>_to_hashgrid/   the Gaussians and the mesh converted back
    outputs/demo/renders/            held-out renders next to ground truth
    outputs/demo/turntable.gif       a 36-frame orbit
    outputs/demo/results.json        the table below, as data
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from radistill.conversion import ConvertConfig, convert, export_field
from radistill.datasets import load_scene
from radistill.datasets.procedural import write_builtin_scene
from radistill.distill.engine import TrainConfig, train
from radistill.distill.objectives import DistillConfig
from radistill.distill.teachers import ImageTeacher
from radistill.evaluate import evaluate_split, render_image
from radistill.fields import create_field
from radistill.io.checkpoint import save_field
from radistill.turntable import turntable_cameras, write_gif

DEMO_HASHGRID = {"log2_table": 16, "max_resolution": 256, "samples_per_ray": 128}


DEMO_STUDENTS = {"mlp": {"samples_per_ray": 128}, "tensorf-vm": {"samples_per_ray": 128, "final_resolution": 96},
                 "tensorf-cp": {"samples_per_ray": 128, "final_resolution": 128, "density_components": 48,
                                "app_components": 96},
                 "gaussians": {"initial_gaussians": 20000, "sh_degree": 1},
                 "mesh": {"resolution": 128, "max_faces": 30000, "texture_size": 512}}
EXPORTS = {"gaussians": "scene.ply", "mesh": "scene.glb"}


def demo_stage_steps(total: int | None) -> tuple[int, int, int]:
    """The conversions' stage steps: shares of 10%, 20% and 70% of ``total`` (default 50000, more
    than any time budget of the demo reaches)."""
    total = total or 50_000
    s1, s2 = max(1, total // 10), max(1, total // 5)
    return s1, s2, max(1, total - s1 - s2)


def format_table(rows: list[dict]) -> str:
    header = (f"{'kind':<12} {'from':<9} {'steps':>6} {'seconds':>8} {'PSNR vs teacher':>16} {'PSNR vs GT':>11} "
              f"{'SSIM':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        vs_teacher = "-" if r.get("psnr_vs_teacher") is None else f"{r['psnr_vs_teacher']:.2f}"
        lines.append(f"{r['kind']:<12} {r['from']:<9} {r['steps']:>6} {r['seconds']:>8.1f} {vs_teacher:>16} "
                     f"{r['psnr']:>11.2f} {r['ssim']:>7.4f}")
    return "\n".join(lines)


def run_demo(output: Path = Path("outputs/demo"), seconds: float = 120.0, resolution: int = 64, seed: int = 0,
             convert_seconds: float = 40.0, steps: int | None = None, convert_steps: int | None = None) -> dict:
    """Run the demo; returns the results that it also prints and writes to ``results.json``.

    ``seconds`` and ``convert_seconds`` bound the teacher's training and each conversion by time;
    ``steps`` and ``convert_steps`` also bound them by steps (the stages keep their shares), so that
    a run whose steps end first gives the same fields on a slow machine as on a fast one."""
    t_start = time.perf_counter()
    output = Path(output)
    print(f"building the built-in scene ({resolution}x{resolution}, 48 train + 8 test views) ...")
    scene_dir = write_builtin_scene(output / "scene", n_train=48, n_test=8, resolution=resolution)
    scene = load_scene(scene_dir)

    torch.manual_seed(seed)
    field = create_field("hashgrid", scene.aabb, **DEMO_HASHGRID)
    meta = {"cameras": scene.cameras[scene.train_indices].to_dict(), "background": scene.background.tolist(),
            "scene": "builtin"}
    cfg = TrainConfig(steps=steps or 100_000, max_seconds=seconds, batch_rays=4096, target_samples=1 << 16, seed=seed,
                      checkpoint_every=200)
    result = train(field, ImageTeacher.from_scene(scene), cfg, output / "run_hashgrid", metadata=meta)
    save_field(output / "hashgrid.safetensors", field, extra_metadata=meta)

    ev = evaluate_split(field, scene, "test", save_dir=output / "renders")
    cams = turntable_cameras(scene.cameras[scene.train_indices], field.aabb, frames=36)
    with torch.no_grad():
        frames = [render_image(field, cams, k, scene.background)["rgb"] for k in range(len(cams))]
    write_gif(output / "turntable.gif", frames)

    rows = [{"kind": "hashgrid", "from": "photos", "steps": result.steps, "seconds": result.seconds,
             "samples_per_s": result.samples_per_s, "psnr_vs_teacher": None, "psnr": ev["psnr"], "ssim": ev["ssim"]}]
    conversions = [("hashgrid", kind, output / "hashgrid.safetensors", options, output / f"convert_{kind}")
                   for kind, options in DEMO_STUDENTS.items()]
    for kind in EXPORTS:
        conversions.append((kind, "hashgrid", output / f"convert_{kind}" / f"{kind}.safetensors", DEMO_HASHGRID,
                            output / f"convert_{kind}_to_hashgrid"))
    for source, kind, teacher, options, out_dir in conversions if convert_seconds > 0 else ():
        print(f"converting {source} -> {kind} ({convert_seconds:.0f} s) ...")
        config = ConvertConfig(distill=DistillConfig(stage_steps=demo_stage_steps(convert_steps)), max_seconds=convert_seconds,
                               seed=seed, report_views=4)
        conv = convert(teacher, kind, config, options, output=out_dir)
        if kind in EXPORTS:
            export_field(output / EXPORTS[kind], conv.student)
        ev_kind = evaluate_split(conv.student, scene, "test", save_dir=output / "renders" / f"{source}_to_{kind}")
        rows.append({"kind": kind, "from": source, "steps": conv.train.steps, "seconds": conv.train.seconds,
                     "samples_per_s": conv.train.samples_per_s, "psnr_vs_teacher": conv.report["psnr_vs_teacher"],
                     "psnr": ev_kind["psnr"], "ssim": ev_kind["ssim"]})
    total = time.perf_counter() - t_start
    summary = {"scene": "builtin", "resolution": resolution, "holdout": "8 test views (transforms_test.json)",
               "rows": rows, "seconds_total": total, "outputs": str(output)}
    (output / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(format_table(rows))
    print(f"\nPSNR vs GT and SSIM on the 8 held-out views; PSNR vs teacher on random teacher poses; "
          f"total {total:.0f} s.\nOutputs in {output}/ (hashgrid.safetensors, convert_<kind>/, scene.ply, scene.glb, "
          f"turntable.gif, renders/, results.json)")
    return summary
