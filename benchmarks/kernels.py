"""Fused Triton kernels against their PyTorch references, and what they buy end to end.

Run:
    python benchmarks/kernels.py                          # every section this device can run
    python benchmarks/kernels.py --only hash composite    # some sections
    python benchmarks/kernels.py --only train profile --budget 60

Sections:
    hash       hash encoding, 16 levels x 2 features, table 2^19, fp32 and fp16 tables, 2^20 and
               2^22 points (2^20 only on a CPU): points/s forward and forward+backward
    composite  compositing 2^18 rays x 64 samples (2^16 rays on a CPU): rays/s, both passes
    march      occupancy-grid ray marching of 2^18 rays (2^14 on a CPU) through a grid a
               quarter full: rays/s
    sweep      launch configurations of the hash and compositing kernels (GPU only), each
               checked against the reference first
    train      a ``hashgrid`` field trained from the real lego photos for ``--budget`` seconds:
               at 800x800 on a GPU (100x100 on a CPU), hold-out ``i % 8 == 0``; held-out PSNR
               and samples/s, with the fastest backend here (and the reference's samples/s)
    profile    where one training step of that field spends its time, op by op, per backend
               (the profile that chose the third fused op)
The Triton rows need a CUDA device; on a CPU only the references are measured (the kernels
do run there, through Triton's interpreter, but only for the parity tests).
Writes benchmarks/results/kernels_<device>.json and .md (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import DATA, write_results  # noqa: E402

from radistill.cameras import Rays  # noqa: E402
from radistill.fields.hashgrid import HashEncoding, hash_encode  # noqa: E402
from radistill.kernels import interpreting, triton_available  # noqa: E402
from radistill.render.occupancy import OccupancyGrid  # noqa: E402
from radistill.render.volume import Samples, composite, march  # noqa: E402

COLUMNS = [("fwd ms", "fwd_ms"), ("fwd points/s", "fwd_points_per_s"), ("fwd rays/s", "fwd_rays_per_s"),
           ("fwd+bwd ms", "fwdbwd_ms"), ("fwd+bwd points/s", "fwdbwd_points_per_s"),
           ("fwd+bwd rays/s", "fwdbwd_rays_per_s"), ("speed-up fwd", "fwd_speedup"),
           ("speed-up fwd+bwd", "fwdbwd_speedup"), ("PSNR", "psnr"), ("samples/s", "samples_per_s"),
           ("steps", "steps"), ("step ms", "step_ms"), ("march", "march_share"),
           ("hash", "hash_encoding_share"), ("MLPs", "mlps_share"), ("composite", "composite_share")]

SECTIONS = ("hash", "composite", "march", "sweep", "train", "profile")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device: torch.device, min_total: float = 0.3, max_repeats: int = 20) -> float:
    """Median wall time of ``fn()`` after one warm-up call (which also compiles kernels)."""
    fn()
    sync(device)
    times: list[float] = []
    while len(times) < 3 or (sum(times) < min_total and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def backends(device: torch.device) -> list[str]:
    return ["torch", "triton"] if device.type == "cuda" and triton_available() else ["torch"]


def record(op: str, size: str, backend: str, params: dict, fwd: float, fwdbwd: float | None, n: int, unit: str) -> dict:
    metrics = {"fwd_ms": round(fwd * 1e3, 3), f"fwd_{unit}_per_s": round(n / fwd)}
    if fwdbwd is not None:
        metrics.update({"fwdbwd_ms": round(fwdbwd * 1e3, 3), f"fwdbwd_{unit}_per_s": round(n / fwdbwd)})
    print(f"kernel/{op}/{size}/{backend}: {metrics}", flush=True)
    return {"id": f"kernel/{op}/{size}/{backend}", "params": {"backend": backend, **params}, "metrics": metrics}


def add_speedups(records: list[dict]) -> None:
    """Each Triton row gets its speed-up over the reference row of the same op, size and loss."""
    by_id = {r["id"]: r for r in records}
    for r in records:
        op_size, backend = r["id"].rsplit("/", 1)
        if not backend.startswith("triton"):
            continue
        loss = r["params"].get("loss")
        ref = by_id.get(f"{op_size}/torch-{loss}" if loss else f"{op_size}/torch")
        if ref:
            for key in ("fwd_ms", "fwdbwd_ms"):
                if key in r["metrics"] and key in ref["metrics"]:
                    r["metrics"][f"{key.split('_')[0]}_speedup"] = round(ref["metrics"][key] / r["metrics"][key], 2)


# ---------------------------------------------------------------- single ops

def bench_hash(device: torch.device) -> list[dict]:
    out = []
    enc = HashEncoding(levels=16, features=2, log2_table=19, base_resolution=16, max_resolution=2048).to(device)
    layout = enc.layout_tensors()
    sizes = (20, 22) if device.type == "cuda" else (20,)
    for log2_n in sizes:
        n = 1 << log2_n
        u = torch.rand(n, 3, device=device)
        for dtype in (torch.float16, torch.float32):
            table = (torch.rand(enc.table.shape, device=device) * 2e-4 - 1e-4).to(dtype).requires_grad_()
            grad = torch.randn(n, 32, device=device, dtype=dtype)
            for backend in backends(device):
                if backend == "torch" and dtype == torch.float16 and device.type == "cpu":
                    continue  # the reference's fp16 gather is a CUDA path
                fwd = seconds(lambda: hash_encode(u, table, layout, backend), device)

                def fwdbwd() -> None:
                    table.grad = None
                    hash_encode(u, table, layout, backend).backward(grad)

                both = seconds(fwdbwd, device)
                params = {"points": n, "levels": 16, "features": 2, "log2_table": 19,
                          "table_dtype": str(dtype).split(".")[-1]}
                size = f"2^{log2_n}-{params['table_dtype']}"
                if backend == "triton":
                    params["backward_order"] = "level-fastest" if hash_kernel().BACKWARD_LEVEL_FASTEST else "blocks-first"
                out.append(record("hash", size, backend, params, fwd, both, n, "points"))
                if backend == "triton":  # the other order of the backward programs, for the choice
                    kernel = hash_kernel()
                    kernel.BACKWARD_LEVEL_FASTEST = not kernel.BACKWARD_LEVEL_FASTEST
                    try:
                        other = seconds(fwdbwd, device)
                    finally:
                        kernel.BACKWARD_LEVEL_FASTEST = not kernel.BACKWARD_LEVEL_FASTEST
                    alt = {**params, "backward_order": "blocks-first" if kernel.BACKWARD_LEVEL_FASTEST else "level-fastest"}
                    out.append(record("hash", size, f"triton-{alt['backward_order']}", alt, fwd, other, n, "points"))
            del table
    return out


def hash_kernel():
    import radistill.kernels.hash_encoding as kernel

    return kernel


def packed(n_rays: int, per_ray: int, device: torch.device) -> Samples:
    m = n_rays * per_ray
    ray_ids = torch.arange(n_rays, device=device).repeat_interleave(per_ray)
    slots = torch.arange(per_ray, device=device).repeat(n_rays)
    t = 0.5 + slots.float() * 0.01
    return Samples(ray_ids, slots, t, torch.full((m,), 0.01, device=device), torch.zeros(m, 3, device=device),
                   n_rays, per_ray)


def bench_composite(device: torch.device) -> list[dict]:
    n_rays = 1 << (18 if device.type == "cuda" else 16)
    per_ray = 64
    samples = packed(n_rays, per_ray, device)
    m = n_rays * per_ray
    sigma = (torch.rand(m, device=device) * 5).requires_grad_()
    rgb = torch.rand(m, 3, device=device, requires_grad=True)
    g_rgb = torch.randn(n_rays, 3, device=device)
    out = []
    for backend in backends(device):
        fwd = seconds(lambda: composite(sigma, rgb, samples, 1e-4, backend=backend), device)

        def fwdbwd() -> None:
            c = composite(sigma, rgb, samples, 1e-4, backend=backend)
            torch.autograd.grad((c.rgb * g_rgb).sum() + c.opacity.sum() + c.depth.sum(), (sigma, rgb))

        both = seconds(fwdbwd, device)
        params = {"rays": n_rays, "samples_per_ray": per_ray}
        out.append(record("composite", f"2^{int(math.log2(n_rays))}x{per_ray}", backend, params, fwd, both, n_rays,
                          "rays"))
    return out


def orbit_rays(n: int, radius: float, generator: torch.Generator) -> Rays:
    """Rays from random points of a sphere towards random points near the centre."""
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1) * radius
    targets = (torch.rand(n, 3, generator=generator) - 0.5) * 1.5
    dirs = torch.nn.functional.normalize(targets - origins, dim=-1)
    return Rays(origins, dirs, dirs, torch.zeros(n), torch.full((n,), 2 * radius))


def bench_march(device: torch.device) -> list[dict]:
    n_rays = 1 << (18 if device.type == "cuda" else 14)
    aabb = torch.tensor([[-1.5] * 3, [1.5] * 3], device=device)
    occ = OccupancyGrid(aabb, 128).to(device)
    centres = occ.cell_centers()
    occ.occupied.copy_(centres.norm(dim=-1) < 1.2)  # a ball: about a quarter of the cells
    rays = orbit_rays(n_rays, 4.0, torch.Generator().manual_seed(0)).to(device)
    step = float((aabb[1] - aabb[0]).norm()) / 512
    out = []
    for backend in backends(device):
        gen = torch.Generator().manual_seed(0)
        fwd = seconds(lambda: march(rays, aabb, step, occ, True, gen, backend=backend), device)
        m = march(rays, aabb, step, occ, True, gen, backend=backend).ray_ids.numel()
        params = {"rays": n_rays, "samples_per_diagonal": 512, "grid": 128,
                  "occupied": round(float(occ.occupied.float().mean()), 3), "samples_kept_per_ray": round(m / n_rays, 1)}
        out.append(record("march", f"2^{int(math.log2(n_rays))}", backend, params, fwd, None, n_rays, "rays"))
    return out


SWEEP_POINTS, SWEEP_RAYS = 1 << 22, 1 << 18


def bench_sweep(device: torch.device) -> list[dict]:
    """Launch configurations of the hash and compositing kernels, each checked against the
    reference before it is timed (the defaults in radistill/kernels come from these rows)."""
    import radistill.kernels.compositing as comp_kernel

    if device.type != "cuda" and not interpreting():
        return []
    out = []
    kernel = hash_kernel()
    enc = HashEncoding(levels=16, features=2, log2_table=19, base_resolution=16, max_resolution=2048).to(device)
    layout = enc.layout_tensors()
    n = SWEEP_POINTS
    u = torch.rand(n, 3, device=device)
    table = (torch.rand(enc.table.shape, device=device) * 2e-4 - 1e-4).half().requires_grad_()
    grad = torch.randn(n, 32, device=device, dtype=torch.float16)
    expected = hash_encode(u, table.float(), layout, "torch")
    defaults = (kernel.BLOCK, kernel.NUM_WARPS)
    try:
        for block, warps in ((128, 4), (256, 4), (256, 8), (64, 2), (512, 8)):
            kernel.BLOCK, kernel.NUM_WARPS = block, warps
            torch.testing.assert_close(hash_encode(u, table, layout, "triton").float(), expected, atol=2e-6, rtol=2e-3)

            def fwdbwd() -> None:
                table.grad = None
                hash_encode(u, table, layout, "triton").backward(grad)

            fwd = seconds(lambda: hash_encode(u, table, layout, "triton"), device)
            params = {"points": n, "table_dtype": "float16", "block": block, "num_warps": warps}
            size = f"2^{n.bit_length() - 1}-float16"
            out.append(record("hash", size, f"triton-b{block}w{warps}", params, fwd, seconds(fwdbwd, device), n, "points"))
    finally:
        kernel.BLOCK, kernel.NUM_WARPS = defaults
    del table, expected

    n_rays, per_ray = SWEEP_RAYS, 64
    samples = packed(n_rays, per_ray, device)
    sigma = (torch.rand(n_rays * per_ray, device=device) * 5).requires_grad_()
    rgb = torch.rand(n_rays * per_ray, 3, device=device, requires_grad=True)
    g_rgb = torch.randn(n_rays, 3, device=device)
    ref = composite(sigma, rgb, samples, 1e-4, backend="torch")
    ref_grads = torch.autograd.grad((ref.rgb * g_rgb).sum() + ref.opacity.sum(), (sigma, rgb))
    defaults = (comp_kernel.RAYS, comp_kernel.CHUNK, comp_kernel.NUM_WARPS)
    try:
        for rays, chunk, warps in ((16, 64, 4), (8, 64, 2), (32, 32, 4), (16, 32, 2), (32, 64, 8), (64, 32, 8), (4, 64, 1)):
            comp_kernel.RAYS, comp_kernel.CHUNK, comp_kernel.NUM_WARPS = rays, chunk, warps
            got = composite(sigma, rgb, samples, 1e-4, backend="triton")
            grads = torch.autograd.grad((got.rgb * g_rgb).sum() + got.opacity.sum(), (sigma, rgb))
            torch.testing.assert_close(got.rgb, ref.rgb, atol=1e-4, rtol=1e-4)
            for g, e in zip(grads, ref_grads):
                torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-3)

            def fwdbwd() -> None:  # the loss of training: colour and opacity (through the background)
                c = composite(sigma, rgb, samples, 1e-4, backend="triton")
                torch.autograd.grad((c.rgb * g_rgb).sum() + c.opacity.sum(), (sigma, rgb))

            fwd = seconds(lambda: composite(sigma, rgb, samples, 1e-4, backend="triton"), device)
            params = {"rays": n_rays, "samples_per_ray": per_ray, "rays_per_program": rays, "chunk": chunk,
                      "num_warps": warps, "loss": "rgb+opacity"}
            size = f"2^{n_rays.bit_length() - 1}x{per_ray}"
            out.append(record("composite", size, f"triton-r{rays}c{chunk}w{warps}", params, fwd, seconds(fwdbwd, device),
                              n_rays, "rays"))
    finally:
        comp_kernel.RAYS, comp_kernel.CHUNK, comp_kernel.NUM_WARPS = defaults

    def ref_fwdbwd() -> None:
        c = composite(sigma, rgb, samples, 1e-4, backend="torch")
        torch.autograd.grad((c.rgb * g_rgb).sum() + c.opacity.sum(), (sigma, rgb))

    fwd = seconds(lambda: composite(sigma, rgb, samples, 1e-4, backend="torch"), device)
    out.append(record("composite", f"2^{n_rays.bit_length() - 1}x{per_ray}", "torch-rgb+opacity",
                      {"rays": n_rays, "samples_per_ray": per_ray,
                      "loss": "rgb+opacity"}, fwd, seconds(ref_fwdbwd, device), n_rays, "rays"))
    return out


# ---------------------------------------------------------------- end to end

GPU_PRESET = {"samples_per_ray": 512, "occupancy_resolution": 128}
CPU_PRESET = {"log2_table": 17, "max_resolution": 512, "samples_per_ray": 256}


def lego(device: torch.device):
    from radistill.datasets import load_scene

    return load_scene(DATA / "nerf_synthetic" / "lego", downscale=1 if device.type == "cuda" else 8)


def train_hashgrid(scene, device: torch.device, backend: str, budget: float, evaluate: bool = True) -> tuple[dict, object]:
    from radistill.distill.engine import TrainConfig, train
    from radistill.distill.teachers import ImageTeacher
    from radistill.evaluate import evaluate_split
    from radistill.fields import create_field

    torch.manual_seed(0)
    preset = dict(GPU_PRESET if device.type == "cuda" else CPU_PRESET)
    field = create_field("hashgrid", scene.aabb, backend=backend, **preset).to(device)
    batch = (1 << 16) if device.type == "cuda" else 4096
    target = (1 << 18) if device.type == "cuda" else (1 << 17)
    cfg = TrainConfig(steps=1_000_000, max_seconds=budget, batch_rays=batch, target_samples=target, checkpoint_every=0,
                      progress=False)
    result = train(field, ImageTeacher.from_scene(scene), cfg)
    h, w = scene.cameras.height, scene.cameras.width
    metrics = {"steps": result.steps, "seconds": round(result.seconds, 1), "samples_per_s": round(result.samples_per_s)}
    if evaluate:
        t0 = time.perf_counter()
        ev = evaluate_split(field, scene, "test")
        metrics.update({"psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4),
                        "eval_seconds": round(time.perf_counter() - t0, 1)})
    rec = {"id": f"train/lego/hashgrid/{'gpu' if device.type == 'cuda' else 'cpu'}-{backend}",
           "params": {"res": f"{w}x{h}", "holdout": scene.holdout, "budget_s": budget, "backend": backend,
                      "batch_rays_max": batch, "target_samples": target, "preset": preset},
           "metrics": metrics}
    print(f"{rec['id']}: {metrics}", flush=True)
    return rec, field


def bench_train(device: torch.device, budget: float) -> tuple[list[dict], object, object]:
    scene = lego(device)
    best = backends(device)[-1]
    if device.type == "cuda":  # compile the kernels first: the budget is for training, not for the JIT
        train_hashgrid(scene, device, best, 3.0, evaluate=False)
    rec, field = train_hashgrid(scene, device, best, budget)
    records = [rec]
    if best != "torch":  # the reference's throughput on the same run, for the end-to-end speed-up
        ref, _ = train_hashgrid(scene, device, "torch", min(budget, 20.0), evaluate=False)
        records.append(ref)
        rec["metrics"]["samples_per_s_speedup"] = round(rec["metrics"]["samples_per_s"] / ref["metrics"]["samples_per_s"], 2)
    return records, field, scene


def bench_profile(field, scene, device: torch.device) -> list[dict]:
    """Time of each op of one training step (forward and backward), on the batches training uses."""
    from radistill.distill.engine import make_optimizer
    from radistill.distill.objectives import PhotoObjective
    from radistill.distill.teachers import ImageTeacher

    teacher = ImageTeacher.from_scene(scene)
    objective = PhotoObjective(teacher)
    target = (1 << 18) if device.type == "cuda" else (1 << 17)
    gen = torch.Generator().manual_seed(0)
    # the rays per step that training settles on: about ``target`` samples
    n_rays = 4096
    for _ in range(4):
        rays = teacher.sample(n_rays, gen).rays.to(device)
        m = march(rays, field.aabb, field.step_size, field.occupancy, True, gen).ray_ids.numel()
        n_rays = int(min(max(n_rays * target / max(m, 1), 256), 1 << 16))
    rays = teacher.sample(n_rays, gen).rays.to(device)
    bg = scene.background.to(device)
    records = []
    for backend in backends(device):
        field.config.backend = backend
        field.encoder.grid.backend = backend
        opt = make_optimizer(field)
        samples = march(rays, field.aabb, field.step_size, field.occupancy, True, gen, backend=backend)
        x = field.normalize(samples.positions)
        d = rays.viewdirs[samples.ray_ids]
        table = field.encoder.grid.table
        layout = field.encoder.grid.layout_tensors()
        enc = hash_encode(x, table, layout, backend).detach().requires_grad_()

        def mlps() -> None:
            j = field.encoder.net(enc)
            rgb = field.decoder(j[:, 1:], d)
            torch.autograd.grad(j[:, 0].sum() + rgb.sum(), [enc, *field.encoder.net.parameters(),
                                                             *field.decoder.parameters()])

        def hash_fb() -> None:
            torch.autograd.grad(hash_encode(x, table, layout, backend).sum(), table)

        sigma = torch.rand(samples.ray_ids.numel(), device=device, requires_grad=True)
        rgb = torch.rand(samples.ray_ids.numel(), 3, device=device, requires_grad=True)

        def comp() -> None:
            c = composite(sigma, rgb, samples, field.config.early_stop, backend=backend)
            torch.autograd.grad(c.rgb.sum() + c.opacity.sum(), (sigma, rgb))

        def full_step() -> None:
            out = objective.step(field, n_rays, 0, 0.5, gen)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        def occupancy() -> None:
            field.update_occupancy(gen)

        parts = {
            "march_ms": seconds(lambda: march(rays, field.aabb, field.step_size, field.occupancy, True, gen,
                                              backend=backend), device),
            "hash_encoding_ms": seconds(hash_fb, device),
            "mlps_ms": seconds(mlps, device),
            "composite_ms": seconds(comp, device),
            "occupancy_update_ms_per_step": seconds(occupancy, device) / 16,  # refreshed every 16 steps
            "step_ms": seconds(full_step, device),
        }
        metrics = {k: round(v * 1e3, 3) for k, v in parts.items()}
        named = sum(v for k, v in metrics.items() if k != "step_ms")
        metrics["other_ms"] = round(metrics["step_ms"] - named, 3)
        for k in list(parts):
            if k != "step_ms":
                metrics[k.replace("_ms", "_share").replace("_per_step", "")] = round(metrics[k] / metrics["step_ms"], 3)
        rec = {"id": f"profile/lego/hashgrid-step/{backend}",
               "params": {"backend": backend, "rays": n_rays, "samples": samples.ray_ids.numel(),
                          "res": f"{scene.cameras.width}x{scene.cameras.height}"},
               "metrics": metrics}
        print(f"{rec['id']}: {metrics}", flush=True)
        records.append(rec)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds of the train section")
    parser.add_argument("--field", type=Path, default=None,
                        help="a trained lego hashgrid checkpoint for the profile (default: the one the train section makes)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch results/")
    args = parser.parse_args()
    common.GIT_AT_START = common.git_commit()
    if args.out is not None:
        common.RESULTS = args.out
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records: list[dict] = []
    failed = []
    field = scene = None

    def run(name, fn):
        """Run a section and write its records at once (a later section timing out loses nothing)."""
        try:
            got = fn()
        except Exception:  # one broken section must not lose the others' results
            traceback.print_exc()
            failed.append(name)
            return None
        new = got[0] if isinstance(got, tuple) else got
        add_speedups(new)
        records.extend(new)
        if new and not args.no_write:
            print(f"wrote {write_results(f'kernels_{device.type}', 'kernels', new, COLUMNS)}", flush=True)
        return got

    for name, fn in (("hash", bench_hash), ("composite", bench_composite), ("march", bench_march),
                     ("sweep", bench_sweep)):
        if name in args.only:
            run(name, lambda: fn(device))
    if "train" in args.only:
        got = run("train", lambda: bench_train(device, args.budget))
        if got:
            field, scene = got[1], got[2]
    if "profile" in args.only:
        if field is None:
            from radistill.io.checkpoint import load_field

            path = args.field or Path("outputs/bench_train/lego_hashgrid.safetensors")
            scene = lego(device)
            field = load_field(path).to(device) if path.exists() else None
        if field is not None:
            run("profile", lambda: bench_profile(field, scene, device))
        else:
            print("profile: no trained field (run the train section or pass --field)")
            failed.append("profile")
    if failed:
        print(f"failed sections: {', '.join(failed)}")
        sys.exit(1)

if __name__ == "__main__":
    main()
