"""Any-to-any conversion on lego 100x100: the 12-pair matrix, the PVD-AL headline, the ablation.

Run (about 105 minutes on a 2-core CPU; the teachers come from the training benchmark):
    python benchmarks/train.py --scene lego            # 40 min, once: writes outputs/bench_train/lego_<kind>.safetensors
    python benchmarks/convert.py                       # matrix + headline + ablation
    python benchmarks/convert.py --only matrix --pairs hashgrid->mlp

* matrix: every ordered pair among mlp, hashgrid, tensorf-vm, tensorf-cp, each conversion given
  ``--budget`` seconds (default 120, a fifth of its teacher's 600). Target: every student within
  1.0 dB of its teacher's held-out PSNR.
* headline: hashgrid -> mlp given a tenth (60 s) of the 600 s that the mlp teacher had from
  scratch; the from-scratch mlp is measured here too (``scratch/lego/mlp``, the teacher file).
* ablation: hashgrid -> mlp and hashgrid -> tensorf-vm at equal time (``--ablation-budget``)
  with no active learning, each single level, and all three; each row is the mean of
  ``--ablation-seeds`` runs (3), since rows differ by about what one seed differs from the next.
* gaussians: hashgrid -> gaussians given ``--budget`` seconds (as the matrix) and
  ``--gaussians-budget`` (600, what the teacher had from scratch: a Gaussian student learns
  from one rasterised view a step, a few hundred of them in two CPU minutes where 3DGS takes
  30,000); then the longer run's Gaussian scene (saved as
  outputs/bench_train/lego_gaussians.safetensors) -> hashgrid in ``--budget`` seconds and in
  ``--gaussians-budget`` seconds (what a hash grid gets from scratch: a Gaussian scene teaches by
  its renders only, as photos do, without the point losses that speed up the neural pairs).
  Target: within 1.0 dB of the teacher's held-out PSNR.
* mesh: hashgrid -> mesh (saved as outputs/bench_train/lego_mesh.safetensors and .glb), then
  that mesh -> hashgrid, each given ``--budget`` seconds of distillation (the extraction before
  it is counted in ``wall_s``). Target: the textured mesh within 2.0 dB of the teacher's
  held-out PSNR.

Held-out PSNR is against the photos ``i % 8 == 0``; ``psnr_teacher`` compares the student with
the teacher's renders of those same held-out poses. Writes benchmarks/results/convert_lego_cpu.json
and .md (records merge by id, so partial runs update their own rows).
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
from train import PRESETS  # noqa: E402

from radistill.conversion import ConvertConfig, convert  # noqa: E402
from radistill.datasets import load_scene  # noqa: E402
from radistill.distill.active import ActiveConfig  # noqa: E402
from radistill.distill.objectives import DistillConfig  # noqa: E402
from radistill.distill.teachers import FieldTeacher  # noqa: E402
from radistill.evaluate import evaluate_split, render_image  # noqa: E402
from radistill.metrics import psnr  # noqa: E402

KINDS = ["hashgrid", "tensorf-vm", "tensorf-cp", "mlp"]
STAGES = (10_000, 20_000, 50_000)  # shares of the budget (12.5% junction, 25% + density/colour, 62.5% + RGB); enough steps that the time budget binds
STUDENT_STAGES = {"mlp": (10_000, 50_000, 20_000)}
"""Students that learn better with another share: an mlp learns most per second from points
(hashgrid -> mlp, 2 CPU minutes: 29.9 dB held-out with the default shares, 30.3 with 62.5% in stage 2)."""
STUDENT_PRESETS = {**PRESETS, "tensorf-cp": {"samples_per_ray": 256},
                   "hashgrid": {**PRESETS["hashgrid"], "log2_table": 19}}
"""Students are built with the training benchmark's presets, except where that preset (chosen to
train fast from photos) holds a student back. ``tensorf-cp``: the kind's own sizes (384 density
and 864 appearance components; the preset's 48 and 96 gave hashgrid -> tensorf-cp 30.73 dB
held-out in 2 CPU minutes against 31.74 with TensoRF's 96 and 288, and the kind's docstring has
the measurements that chose 384 and 864). ``hashgrid``: the kind's own
table of 2^19 entries a level instead of the preset's 2^17 (tensorf-vm -> hashgrid, 2 CPU
minutes: 32.99 dB held-out against 32.71, with a third fewer steps; tensorf-cp -> hashgrid 31.70
against 31.58), at the preset's finest resolution (512; the kind's 2048 gave 32.48). A student
starts at its final size and learns from points, so the larger size is worth its cost here."""
LEVELS = {"none": (False, False, False), "pose": (True, False, False), "ray": (False, True, False),
          "point": (False, False, True), "pose+ray+point": (True, True, True)}


class Bench:
    def __init__(self, teachers: Path, renders: Path) -> None:
        self.scene = load_scene(DATA / "nerf_synthetic" / "lego", downscale=8)
        self.teachers_dir = teachers
        self.renders = renders
        self._teachers: dict[str, FieldTeacher] = {}
        self._teacher_images: dict[str, list[torch.Tensor]] = {}
        self.teacher_psnr: dict[str, float] = {}

    def teacher(self, kind: str) -> FieldTeacher:
        if kind not in self._teachers:
            path = self.teachers_dir / f"lego_{kind}.safetensors"
            if not path.exists():
                sys.exit(f"missing teacher {path}: run `python benchmarks/train.py --scene lego` first")
            self._teachers[kind] = FieldTeacher.from_checkpoint(path)
            field = self._teachers[kind].field
            _, cams = self.scene.split("test")
            self._teacher_images[kind] = [render_image(field, cams, k, self.scene.background)["rgb"] for k in range(len(cams))]
            self.teacher_psnr[kind] = evaluate_split(field, self.scene, "test")["psnr"]
            print(f"teacher {kind}: held-out PSNR {self.teacher_psnr[kind]:.2f} dB")
        return self._teachers[kind]

    def run(self, src: str, dst: str, budget: float, levels: str = "pose+ray+point", record_id: str | None = None,
            save_renders: bool = False, seed: int = 0) -> dict:
        teacher = self.teacher(src)
        poses, rays, points = LEVELS[levels]
        stages = STUDENT_STAGES.get(dst, STAGES)
        config = ConvertConfig(distill=DistillConfig(stage_steps=stages, active=ActiveConfig(poses, rays, points)),
                               max_seconds=budget, checkpoint_every=0, progress=False, report_views=0, seed=seed)
        t0 = time.perf_counter()
        result = convert(teacher, dst, config, dict(STUDENT_PRESETS.get(dst, {})))
        wall = time.perf_counter() - t0
        student = result.student
        if dst == "gaussians":  # the Gaussian teacher of gaussians -> *
            from radistill.io.checkpoint import save_field

            save_field(self.teachers_dir / "lego_gaussians.safetensors", student, extra_metadata={
                "cameras": teacher.cameras.to_dict(), "background": teacher.background.tolist(), "scene": "lego"})
            self._teachers.pop("gaussians", None)
        if dst == "mesh":  # the mesh teacher of mesh -> *, and the file for the glTF viewer check
            from radistill.io.checkpoint import save_field
            from radistill.io.mesh import save_mesh

            save_field(self.teachers_dir / "lego_mesh.safetensors", student, extra_metadata={
                "cameras": teacher.cameras.to_dict(), "background": teacher.background.tolist(), "scene": "lego"})
            save_mesh(self.teachers_dir / "lego_mesh.glb", student)
            self._teachers.pop("mesh", None)
        ev = evaluate_split(student, self.scene, "test", save_dir=self.renders / f"{src}_to_{dst}" if save_renders else None)
        _, cams = self.scene.split("test")
        vs_teacher = [psnr(render_image(student, cams, k, self.scene.background)["rgb"], ref)
                      for k, ref in enumerate(self._teacher_images[src])]
        record = {
            "id": record_id or f"convert/lego/{src}->{dst}",
            "params": {"res": "100x100", "holdout": "i%8==0", "budget_s": budget, "al": levels, "seed": seed,
                       "stage_steps": list(stages),
                       "preset": STUDENT_PRESETS.get(dst, {}), "batch_rays": config.batch_rays or type(student).student_batch_rays},
            "metrics": {"psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4),
                        "psnr_teacher": round(sum(vs_teacher) / len(vs_teacher), 3),
                        "teacher_heldout_psnr": round(self.teacher_psnr[src], 3),
                        "delta_db": round(ev["psnr"] - self.teacher_psnr[src], 3),
                        "seconds": round(result.train.seconds, 1), "steps": result.train.steps,
                        "wall_s": round(wall, 1)},
        }
        if dst == "gaussians":
            record["metrics"]["gaussians"] = len(student)
        if dst == "mesh":
            record["metrics"]["faces"] = int(student.faces.shape[0])
            record["params"]["mesh"] = student.config_dict()
        m = record["metrics"]
        print(f"{record['id']}: {m['psnr']:.2f} dB held-out ({m['delta_db']:+.2f} vs teacher), "
              f"{m['psnr_teacher']:.2f} dB vs teacher, {m['steps']} steps in {m['seconds']:.0f} s", flush=True)
        return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["matrix", "headline", "ablation", "gaussians", "from-gaussians", "mesh"],
                        default=["matrix", "headline", "ablation", "gaussians", "mesh"],
                        help="parts to run (from-gaussians: only the gaussians -> hashgrid rows, from the saved "
                             "scene of an earlier gaussians run; gaussians includes them)")
    parser.add_argument("--pairs", nargs="+", help="matrix pairs as src->dst (default: all 12)")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per matrix conversion")
    parser.add_argument("--headline-budget", type=float, default=60.0)
    parser.add_argument("--gaussians-budget", type=float, default=600.0,
                        help="seconds of the longer hashgrid -> gaussians run (0: none)")
    parser.add_argument("--ablation-budget", type=float, default=60.0)
    parser.add_argument("--ablation-to", nargs="+", default=["mlp", "tensorf-vm"], help="students of the ablation")
    parser.add_argument("--ablation-levels", nargs="+", choices=list(LEVELS), default=list(LEVELS),
                        help="rows of the ablation (default: all five)")
    parser.add_argument("--ablation-seeds", type=int, default=3,
                        help="runs of each ablation row (seeds 0..n-1); the row gives their mean")
    parser.add_argument("--teachers", type=Path, default=Path("outputs/bench_train"))
    parser.add_argument("--renders", type=Path, default=Path("outputs/bench_convert"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    common.GIT_AT_START = common.git_commit()
    torch.manual_seed(0)
    bench = Bench(args.teachers, args.renders)
    records: list[dict] = []

    def flush() -> None:  # write after every record: a long run interrupted keeps what it measured
        if not args.no_write and records:
            write(records)

    if "headline" in args.only:
        bench.teacher("mlp")
        records.append({"id": "scratch/lego/mlp", "params": {"res": "100x100", "holdout": "i%8==0", "budget_s": 600,
                                                             "source": "benchmarks/train.py (the mlp teacher)"},
                        "metrics": {"psnr": round(bench.teacher_psnr["mlp"], 3)}})
        rec = bench.run("hashgrid", "mlp", args.headline_budget, record_id="convert/lego/hashgrid->mlp@60s")
        rec["metrics"]["scratch_psnr"] = round(bench.teacher_psnr["mlp"], 3)
        rec["metrics"]["gain_over_scratch_db"] = round(rec["metrics"]["psnr"] - bench.teacher_psnr["mlp"], 3)
        rec["params"]["scratch_budget_s"] = 600
        records.append(rec)
        flush()
    if "matrix" in args.only:
        pairs = [p.split("->") for p in args.pairs] if args.pairs else [(s, d) for s in KINDS for d in KINDS if s != d]
        for src, dst in pairs:
            records.append(bench.run(src, dst, args.budget, save_renders=True))
            flush()
    if "gaussians" in args.only:
        records.append(bench.run("hashgrid", "gaussians", args.budget, save_renders=True))
        flush()
        if args.gaussians_budget:  # run last, so its scene is the Gaussian teacher below
            budget = args.gaussians_budget
            records.append(bench.run("hashgrid", "gaussians", budget,
                                     record_id=f"convert/lego/hashgrid->gaussians@{budget:g}s"))
            flush()
    if "gaussians" in args.only or "from-gaussians" in args.only:
        teacher_budget = args.gaussians_budget or args.budget
        for budget in dict.fromkeys((args.budget, args.gaussians_budget)):  # once each, when they are equal
            if not budget:
                continue
            rec = bench.run("gaussians", "hashgrid", budget, save_renders=budget == args.budget,
                            record_id=None if budget == args.budget else f"convert/lego/gaussians->hashgrid@{budget:g}s")
            rec["params"]["teacher_budget_s"] = teacher_budget
            records.append(rec)
            flush()
    if "mesh" in args.only:
        for src, dst in (("hashgrid", "mesh"), ("mesh", "hashgrid")):
            records.append(bench.run(src, dst, args.budget, save_renders=True))
            flush()
    if "ablation" in args.only:
        for dst in args.ablation_to:
            for levels in args.ablation_levels:
                runs = [bench.run("hashgrid", dst, args.ablation_budget, levels, seed=seed,
                                  record_id=f"ablation/lego/hashgrid->{dst}/{levels}") for seed in range(args.ablation_seeds)]
                records.append(mean_record(runs))
                flush()


def mean_record(runs: list[dict]) -> dict:
    """One record for runs that differ only in their seed: the mean of each metric, with the
    held-out PSNR of every run and their spread (ablation rows differ by hundredths to tenths
    of a dB, about what one run differs from the next)."""
    first = runs[0]
    metrics = {key: round(sum(r["metrics"][key] for r in runs) / len(runs), 4 if key == "ssim" else 3)
               for key, v in first["metrics"].items() if isinstance(v, (int, float))}
    metrics["steps"] = round(metrics["steps"])
    each = [r["metrics"]["psnr"] for r in runs]
    metrics["psnr_runs"] = each
    metrics["psnr_spread"] = round(max(each) - min(each), 3)
    params = {**first["params"], "seeds": [r["params"]["seed"] for r in runs]}
    del params["seed"]
    print(f"{first['id']}: mean {metrics['psnr']:.2f} dB held-out over {len(runs)} seeds ({each})", flush=True)
    return {"id": first["id"], "params": params, "metrics": metrics}


def write(records: list[dict]) -> None:
    cols = [("PSNR", "psnr"), ("teacher PSNR", "teacher_heldout_psnr"), ("Δ dB", "delta_db"),
            ("PSNR vs teacher", "psnr_teacher"), ("SSIM", "ssim"), ("seconds", "seconds"), ("steps", "steps"),
            ("budget s", "budget_s"), ("wall s", "wall_s"), ("AL", "al"),
            ("runs (PSNR)", "psnr_runs")]
    path = write_results("convert_lego_cpu", "convert", records, cols)
    append_matrix(path)
    print(f"wrote {path}")


def append_matrix(path: Path) -> None:
    """Add the 4x4 view of the pairs to the Markdown table: held-out PSNR (difference to the teacher)."""
    import json

    by_id = {r["id"]: r["metrics"] for r in json.loads(path.read_text())["records"]}
    lines = ["", "Held-out PSNR of each student (dB), and its difference to its teacher's held-out PSNR:", "",
             "| teacher \\ student | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for src in KINDS:
        cells = []
        for dst in KINDS:
            m = by_id.get(f"convert/lego/{src}->{dst}")
            cells.append("-" if src == dst or m is None else f"{m['psnr']:.2f} ({m['delta_db']:+.2f})")
        teacher = next((by_id[f"convert/lego/{src}->{d}"]["teacher_heldout_psnr"] for d in KINDS
                        if f"convert/lego/{src}->{d}" in by_id), None)
        label = src if teacher is None else f"{src} ({teacher:.2f})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Gaussians and meshes (held-out PSNR, difference to the teacher):", ""]
    def longer(pair: str) -> list[str]:  # the same pair at other budgets (``pair@600s``)
        return sorted(i.split("/")[-1] for i in by_id if i.startswith(f"convert/lego/{pair}@"))

    for pair in ("hashgrid->gaussians", *longer("hashgrid->gaussians"), "gaussians->hashgrid", *longer("gaussians->hashgrid"),
                 "hashgrid->mesh", "mesh->hashgrid"):
        m = by_id.get(f"convert/lego/{pair}")
        if m is not None:
            lines.append(f"- {pair}: {m['psnr']:.2f} dB ({m['delta_db']:+.2f}; teacher {m['teacher_heldout_psnr']:.2f}), "
                         f"{m['seconds']:.0f} s, {m['steps']} steps")
    md = path.with_suffix(".md")
    md.write_text(md.read_text() + "\n".join(lines) + "\n")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
