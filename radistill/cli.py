"""The ``radistill`` command: ``train``, ``convert``, ``render``, ``eval`` and ``demo``.

Only the standard library and tyro are imported at start-up, so ``radistill --help`` is fast;
each command imports what it needs when it runs. User errors print ``error: ...`` and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional, Union

import tyro

KIND_HELP = "mlp, hashgrid, tensorf-vm, tensorf-cp, gaussians or mesh"


def _parse_overrides(items: tuple[str, ...]) -> dict:
    from radistill.fields.base import parse_key_values

    return parse_key_values(items, "--set")


def _device(name: str):
    """The torch device for --device (``radistill.devices.resolve_device``)."""
    from radistill.devices import resolve_device

    return resolve_device(name)


@dataclass
class Train:
    """Train a field from posed photos (a NeRF Blender, LLFF or nerfstudio folder, or 'builtin')."""

    data: str = "builtin"
    """Scene folder, or 'builtin' for the procedural scene."""
    kind: str = "hashgrid"
    """Representation to train: mlp, hashgrid, tensorf-vm or tensorf-cp (Gaussians come from convert)."""
    output: Path = Path("outputs/train")
    """Folder for checkpoint.safetensors (resumable) and <kind>.safetensors (the field)."""
    steps: int = 3000
    """Training steps."""
    max_seconds: Optional[float] = None
    """Stop after this many seconds of training."""
    batch_rays: int = 4096
    """Rays per step."""
    downscale: float = 1.0
    """Divide image width and height by this (8 turns lego's 800x800 into 100x100)."""
    background: Optional[tuple[float, float, float]] = None
    """Colour RGBA images are composited on (default: white for Blender scenes, black otherwise)."""
    resume: bool = False
    """Continue the run in --output from its last checkpoint."""
    checkpoint_every: int = 250
    """Steps between resumable checkpoints."""
    seed: int = 0
    device: str = "auto"
    """Where to train: auto (CUDA when there is one, with the fused Triton kernels when Triton is
    installed), cpu, cuda or cuda:N."""
    set: tuple[str, ...] = ()
    """Field options as key=value, e.g. --set log2_table=17 samples_per_ray=192."""

    def run(self) -> None:
        import torch

        from radistill.datasets import load_scene
        from radistill.distill.engine import TrainConfig, train
        from radistill.distill.teachers import ImageTeacher
        from radistill.evaluate import evaluate_split
        from radistill.fields import create_field, kind_class
        from radistill.io.checkpoint import save_field

        from radistill.errors import ConfigError

        overrides = _parse_overrides(self.set)
        if getattr(kind_class(self.kind), "learns_from_images", False):  # checked before the scene is loaded
            raise ConfigError(f"{self.kind} are not trained from photos here: train a neural kind, then "
                              f"`radistill convert FIELD --to {self.kind}` (or convert a 3DGS .ply or a mesh file)")
        device = _device(self.device)
        scene = load_scene(self.data, downscale=self.downscale, background=self.background)
        torch.manual_seed(self.seed)
        field = create_field(self.kind, scene.aabb, **overrides).to(device)
        meta = {"cameras": scene.cameras[scene.train_indices].to_dict(), "background": scene.background.tolist(),
                "scene": str(self.data)}
        cfg = TrainConfig(steps=self.steps, max_seconds=self.max_seconds, batch_rays=self.batch_rays, seed=self.seed,
                          checkpoint_every=self.checkpoint_every)
        result = train(field, ImageTeacher.from_scene(scene), cfg, self.output, resume=self.resume, metadata=meta)
        path = save_field(self.output / f"{self.kind}.safetensors", field, extra_metadata=meta)
        ev = evaluate_split(field, scene, "test", progress=True) if scene.test_indices else None
        print(f"trained {self.kind} for {result.steps} steps ({result.seconds:.0f} s, "
              f"{result.samples_per_s:,.0f} samples/s); saved {path}")
        if ev:
            print(f"held-out ({scene.holdout}): PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.4f}")


@dataclass
class Convert:
    """Convert a trained field to another kind (progressive volume distillation with active learning).

    Needs no photos: the teacher renders random poses drawn like its training cameras.
    """

    teacher: Annotated[Path, tyro.conf.Positional]
    """A radistill .safetensors field (the output of train or convert), a 3DGS .ply / .splat scene, a
    mesh (.glb, .gltf, .obj, or .ply with faces), a TensoRF checkpoint (.th), an Instant-NGP snapshot
    (.msgpack, .ingp), or a nerfstudio run folder (splatfacto, nerfacto)."""
    to: str
    """Kind to convert to: mlp, hashgrid, tensorf-vm, tensorf-cp, gaussians or mesh."""
    output: Path = Path("outputs/convert")
    """Folder for checkpoint.safetensors (resumable), <kind>.safetensors and report.json; with
    --to gaussians it may be a .ply or .splat file to export, with --to mesh a .glb or .obj (the
    folder <stem>_convert beside it keeps the rest)."""
    stage_steps: Optional[tuple[int, int, int]] = None
    """Steps of stage 1 (junction), 2 (+ log density and point colour) and 3 (+ rendered colour);
    default: the student kind's own (400 600 2000; mlp 375 1875 750)."""
    max_seconds: Optional[float] = None
    """Stop after this many seconds; the stages keep their shares of the time (without --stage-steps,
    the time alone ends the run)."""
    batch_rays: Optional[int] = None
    """Most rays per step (default: the student kind's own, 256 for mlp, else 1024)."""
    images: Optional[str] = None
    """The teacher's original photos (scene folder): mixed into stage 3, and a held-out PSNR is reported."""
    downscale: float = 1.0
    """Downscale of --images (8 turns lego's 800x800 into 100x100)."""
    active_poses: bool = True
    """Active learning: re-visit perturbed copies of the worst-rendered views."""
    active_rays: bool = True
    """Active learning: mix a pool of the highest-error rays into every batch."""
    active_points: bool = True
    """Active learning: point losses only on the top-weight samples of opaque-enough rays."""
    view_pool: int = 64
    """Teacher views in play at a time. A teacher that teaches by its renders (Gaussians, nerfacto)
    renders each once, so fewer views start a slow teacher sooner."""
    view_size: Optional[int] = None
    """Longest side in pixels of the views the teacher renders and the student learns from
    (the teacher's cameras scaled down to it; default: their own size). For a large capture
    on a CPU, e.g. 400."""
    report_views: int = 8
    """Random teacher poses on which the final report compares student and teacher (0: no
    report; each view is one render of both)."""
    resume: bool = False
    """Continue the conversion in --output from its last checkpoint."""
    checkpoint_every: int = 250
    """Steps between resumable checkpoints."""
    seed: int = 0
    device: str = "auto"
    """Where the teacher and the student run: auto (CUDA when there is one), cpu, cuda, cuda:N."""
    set: tuple[str, ...] = ()
    """Options of the student kind as key=value, e.g. --set log2_table=17."""

    def run(self) -> None:
        from radistill.conversion import ConvertConfig, convert
        from radistill.distill.active import ActiveConfig
        from radistill.distill.objectives import DistillConfig
        from radistill.fields import kind_class

        kind_class(self.to)  # an unknown kind fails before the teacher is loaded
        options = _parse_overrides(self.set)
        images = None
        if self.images is not None:
            from radistill.datasets import load_scene

            images = load_scene(self.images, downscale=self.downscale, background=_background_tuple(self.teacher))
        active = ActiveConfig(poses=self.active_poses, rays=self.active_rays, points=self.active_points,
                              view_pool=self.view_pool)
        config = ConvertConfig(distill=DistillConfig(stage_steps=self.stage_steps, active=active),
                               max_seconds=self.max_seconds, batch_rays=self.batch_rays,
                               checkpoint_every=self.checkpoint_every, seed=self.seed, device=self.device,
                               view_size=self.view_size, report_views=self.report_views)
        result = convert(self.teacher, self.to, config, options, images, self.output, self.resume)
        r = result.report
        print(f"converted {r['from']} -> {r['to']} in {r['steps']} steps ({r['seconds']:.0f} s); saved {result.path}")
        if "psnr_vs_teacher" in r:
            width, height = r["report_view_size"]
            print(f"PSNR vs the teacher on {r['report_views']} random {width}x{height} views: {r['psnr_vs_teacher']:.2f} dB")
        if "psnr_heldout" in r:
            print(f"held-out PSNR vs the photos: {r['psnr_heldout']:.2f} dB")


@dataclass
class Render:
    """Render a checkpoint: the cameras of a scene split, or a turntable GIF."""

    checkpoint: Annotated[Path, tyro.conf.Positional]
    """A .safetensors field."""
    output: Path = Path("outputs/render")
    """Folder for PNG images, or the .gif path for a turntable."""
    data: Optional[str] = None
    """Render the cameras of this scene's --split (else a turntable)."""
    split: str = "test"
    downscale: float = 1.0
    frames: int = 36
    """Turntable frames."""
    elevation: float = 30.0
    """Turntable elevation in degrees."""
    resolution: Optional[int] = None
    """Turntable image width (default: the training cameras')."""

    def run(self) -> None:
        from tqdm.auto import tqdm

        from radistill.errors import ConfigError
        from radistill.evaluate import render_image, save_png
        from radistill.io.checkpoint import checkpoint_cameras, load_field
        from radistill.turntable import turntable_cameras, write_gif

        field = load_field(self.checkpoint)
        if self.data is not None:
            from radistill.datasets import load_scene

            scene = load_scene(self.data, downscale=self.downscale)
            _, cams = scene.split(self.split)
            for k in tqdm(range(len(cams)), desc="render", unit="image"):
                save_png(self.output / f"{self.split}_{k:03d}.png", render_image(field, cams, k, scene.background)["rgb"])
            print(f"wrote {len(cams)} images to {self.output}/")
            return
        train_cams = checkpoint_cameras(self.checkpoint)
        if train_cams is None:
            raise ConfigError(f"{self.checkpoint}: has no training cameras; pass --data to render a scene's cameras")
        if self.frames < 1 or (self.resolution is not None and self.resolution < 1):
            raise ConfigError(f"--frames and --resolution must be positive, got {self.frames} and {self.resolution}")
        cams = turntable_cameras(train_cams, field.aabb, self.frames, self.elevation, self.resolution)
        background = _background(self.checkpoint)
        frames = [render_image(field, cams, k, background)["rgb"] for k in tqdm(range(len(cams)), desc="turntable", unit="frame")]
        out = self.output if self.output.suffix == ".gif" else self.output / "turntable.gif"
        write_gif(out, frames)
        print(f"wrote {out}")


def _background(path: Path):
    from radistill.io.checkpoint import checkpoint_background

    return checkpoint_background(path)


def _background_tuple(path: Path):
    saved = _background(path)
    return None if saved is None else tuple(saved.tolist())


@dataclass
class Eval:
    """PSNR and SSIM of a checkpoint on a scene split, per image and mean (JSON)."""

    checkpoint: Annotated[Path, tyro.conf.Positional]
    """A .safetensors field."""
    data: str
    """Scene folder or 'builtin'."""
    split: str = "test"
    downscale: float = 1.0
    background: Optional[tuple[float, float, float]] = None
    """Colour RGBA images are composited on (default: as when training)."""
    output: Optional[Path] = None
    """Write the JSON here as well as printing it."""
    device: str = "auto"
    """Where to render: auto (CUDA when there is one), cpu, cuda or cuda:N."""

    def run(self) -> None:
        from radistill.datasets import load_scene
        from radistill.evaluate import evaluate_split
        from radistill.io.checkpoint import load_field

        field = load_field(self.checkpoint, _device(self.device))
        background = self.background if self.background is not None else _background_tuple(self.checkpoint)
        scene = load_scene(self.data, downscale=self.downscale, background=background)
        result = {"checkpoint": str(self.checkpoint), "data": self.data, "split": self.split,
                  **evaluate_split(field, scene, self.split, progress=True)}
        text = json.dumps(result, indent=2)
        if self.output is not None:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.output.write_text(text + "\n")
        print(text)


@dataclass
class Demo:
    """The main job on the built-in scene: train a hashgrid, evaluate, render a turntable, convert it to every other kind."""

    output: Path = Path("outputs/demo")
    """Everything goes here."""
    seconds: float = 120.0
    """Training budget of the hashgrid teacher."""
    resolution: int = 64
    """Image size of the built-in scene."""
    convert_seconds: float = 40.0
    """Budget of each conversion (the hashgrid to every other kind, the Gaussians and the mesh back; 0: skip them)."""
    steps: int | None = None
    """Also stop the teacher's training after this many steps (for results that do not depend on the machine's speed)."""
    convert_steps: int | None = None
    """Also stop each conversion after this many steps."""

    def run(self) -> None:
        from radistill.demo import run_demo

        run_demo(self.output, self.seconds, self.resolution, convert_seconds=self.convert_seconds, steps=self.steps,
                 convert_steps=self.convert_steps)


Command = Union[
    Annotated[Train, tyro.conf.subcommand("train")],
    Annotated[Convert, tyro.conf.subcommand("convert")],
    Annotated[Render, tyro.conf.subcommand("render")],
    Annotated[Eval, tyro.conf.subcommand("eval")],
    Annotated[Demo, tyro.conf.subcommand("demo")],
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radistill`` command."""
    command = tyro.cli(Command, args=argv, prog="radistill",
                       description="Convert, distill and relight radiance fields.")
    from radistill.errors import RadistillError
    from radistill.host_memory import reuse_large_buffers

    reuse_large_buffers()
    try:
        command.run()
    except RadistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
