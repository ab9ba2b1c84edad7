"""The training loop shared by every teacher and student.

What a step optimises comes from an objective (``objectives.py``): with an ``ImageTeacher``
only the ray-level colour loss is available, which is training from photos; with a
``FieldTeacher`` it is progressive volume distillation with active learning. The loop owns
what every run needs: the per-kind optimiser groups with an exponential learning-rate decay,
occupancy-grid refreshes, a progress bar with an ETA, atomic checkpoints with the optimiser,
random-generator and active-learning state, and exact resumption.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from radistill.distill.objectives import DistillConfig, StepLoss, objective_for
from radistill.distill.teachers import FieldTeacher, ImageTeacher
from radistill.errors import CheckpointError
from radistill.fields.base import Representation
from radistill.io.checkpoint import field_from_checkpoint, read_checkpoint, save_field
from radistill.rng import deterministic_on_cpu

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class TrainConfig:
    """Options of a training run."""

    steps: int = 3000
    """Training steps; the run also ends when ``max_seconds`` have passed."""
    max_seconds: float | None = None
    """Wall-clock budget in seconds (None: no limit)."""
    batch_rays: int = 4096
    """Rays per step (the most, when ``target_samples`` is set)."""
    target_samples: int | None = 1 << 17
    """Adapt the rays per step so that each step queries about this many samples
    (Instant-NGP's rule; keeps early steps, when little space is known empty, affordable)."""
    min_batch_rays: int = 256
    lr_final_factor: float = 0.1
    """Learning rates decay exponentially to this fraction at the end of the run."""
    occupancy_every: int = 16
    """Refresh the occupancy grid every this many steps."""
    checkpoint_every: int = 250
    """Write the resumable checkpoint every this many steps (0: only at the end)."""
    seed: int = 0
    progress: bool = True
    """Show a progress bar."""


@dataclass
class TrainResult:
    steps: int
    seconds: float
    samples: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


def make_optimizer(student: Representation) -> torch.optim.Optimizer:
    groups = student.param_groups()
    for g in groups:
        g["base_lr"] = g["lr"]
    params = [q for g in groups for q in g["params"]]
    # the fused step (one pass per tensor) is Adam's update (equal up to float rounding), 4-7x
    # faster on the CPU than torch's default there (lego fields: 18 -> 2.5 ms a step for tensorf-vm)
    fused = all(q.is_floating_point() and q.device.type in ("cpu", "cuda") for q in params)
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=fused)


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], str]:
    """The optimiser state as flat tensors plus JSON hyper-parameters (no pickling)."""
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, json.dumps(sd["param_groups"])


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], groups_json: str) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = json.loads(groups_json)
    for group in groups:  # the step this optimiser takes, not the one of the run that saved it
        group["fused"] = opt.defaults.get("fused")
    opt.load_state_dict({"state": state, "param_groups": groups})


def set_learning_rates(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def save_training_checkpoint(path: Path, student: Representation, opt: torch.optim.Optimizer, step: int,
                             elapsed: float, samples: int, generator: torch.Generator, config: TrainConfig,
                             metadata: dict[str, Any], objective_state: dict[str, Tensor] | None = None) -> None:
    tensors, groups = optimizer_state(opt)
    tensors["train.generator"] = generator.get_state()
    tensors.update({f"objective.{k}": v for k, v in (objective_state or {}).items()})
    meta = dict(metadata)
    meta.update({"train_step": step, "train_elapsed": elapsed, "train_samples": samples,
                 "train_config": asdict(config), "optim_groups": groups})
    save_field(path, student, tensors, meta)


class StepRunner:
    """One training step at a time: what ``train`` loops over, and what a host trainer (the
    nerfstudio plugin) calls once per iteration of its own loop.

    It owns the optimiser (rebuilt when the student changes its parameters, as Gaussians do
    when they densify), the learning-rate decay, occupancy refreshes, the adaptive batch size
    and the objective.
    """

    def __init__(self, student: Representation, objective: Any, config: TrainConfig,
                 generator: torch.Generator) -> None:
        self.student, self.objective, self.config, self.generator = student, objective, config, generator
        self.opt = make_optimizer(student)
        self.batch_rays = config.batch_rays if config.target_samples is None else min(config.batch_rays, 1024)
        self.updates_occupancy = objective.updates_occupancy and hasattr(student, "update_occupancy")

    def step(self, step: int, progress: float) -> StepLoss:
        """Optimise step number ``step`` at ``progress`` in [0, 1] of the run."""
        config, student, generator = self.config, self.student, self.generator
        if student.on_train_step(step, generator, progress):
            old, self.opt = self.opt, make_optimizer(student)
            student.carry_optimizer_state(old, self.opt)
        set_learning_rates(self.opt, config.lr_final_factor ** progress)
        if self.updates_occupancy and step % config.occupancy_every == 0:
            student.update_occupancy(generator)
        out = self.objective.step(student, self.batch_rays, step, progress, generator)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        if config.target_samples is not None:
            ratio = config.target_samples / max(out.n_samples, 1)
            self.batch_rays = int(min(max(self.batch_rays * min(ratio, 2.0), config.min_batch_rays), config.batch_rays))
        return out


def train(student: Representation, teacher: ImageTeacher | FieldTeacher, config: TrainConfig,
          out_dir: str | Path | None = None, resume: bool = False, metadata: dict[str, Any] | None = None,
          distill: DistillConfig | None = None, images: ImageTeacher | None = None) -> TrainResult:
    """Fit ``student`` to ``teacher``; returns the steps, time and samples used.

    Args:
        student: the field to train (modified in place); for a ``FieldTeacher`` build it with
            ``from_teacher``.
        teacher: photos (``ImageTeacher``) or a trained field (``FieldTeacher``).
        config: budget, batch size, schedule, checkpoints. With a field teacher the number of
            steps is the sum of ``distill.stage_steps`` (``DistillConfig.for_student``).
        out_dir: where ``checkpoint.safetensors`` goes (None: no checkpoints).
        resume: continue from ``out_dir/checkpoint.safetensors`` if it exists.
        metadata: extra checkpoint metadata (for instance the training cameras).
        distill: stages, loss weights and active learning (field teachers only).
        images: original photos mixed into stage 3 of a distillation (optional).
    """
    with deterministic_on_cpu(student.aabb.device):  # so that a resumed run equals an uninterrupted one
        return _train(student, teacher, config, out_dir, resume, metadata, distill, images)


def _train(student: Representation, teacher: ImageTeacher | FieldTeacher, config: TrainConfig,
           out_dir: str | Path | None, resume: bool, metadata: dict[str, Any] | None,
           distill: DistillConfig | None, images: ImageTeacher | None) -> TrainResult:
    from tqdm.auto import tqdm

    metadata = dict(metadata or {})
    generator = torch.Generator().manual_seed(config.seed)
    if isinstance(teacher, FieldTeacher):
        distill = (distill or DistillConfig()).for_student(student, config.max_seconds)
        config = replace(config, steps=distill.steps)
    objective = objective_for(teacher, generator, distill, images, student)
    runner = StepRunner(student, objective, config, generator)
    step, elapsed, samples = 0, 0.0, 0
    ckpt = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if resume and ckpt is not None and ckpt.exists():
        step, elapsed, samples, runner.batch_rays, runner.opt = restore_training_checkpoint(ckpt, student, generator, objective)
    history: list[dict[str, float]] = []
    by_time = config.max_seconds is not None
    bar = tqdm(total=round(config.max_seconds) if by_time else config.steps, initial=round(elapsed) if by_time else step,
               disable=not config.progress, desc=f"{'distill' if distill else 'train'} {student.kind}",
               unit="s" if by_time else "step", dynamic_ncols=True)
    start = time.perf_counter() - elapsed

    def checkpoint(step_start: tuple[Tensor, dict[str, Tensor]] | None = None) -> None:
        if step_start is not None:  # interrupted inside a step: save the state as that step found it
            generator.set_state(step_start[0])
            objective.load(step_start[1])
        save_training_checkpoint(ckpt, student, runner.opt, step, time.perf_counter() - start, samples, generator,
                                 config, {**metadata, "train_batch_rays": runner.batch_rays}, objective.state())

    step_start = None

    try:
        while step < config.steps:
            elapsed = time.perf_counter() - start
            if config.max_seconds is not None and elapsed >= config.max_seconds:
                break
            progress = step / config.steps
            if config.max_seconds:
                progress = max(progress, elapsed / config.max_seconds)
            if ckpt is not None:
                step_start = (generator.get_state(), {k: v.clone() for k, v in objective.state().items()})
            out = runner.step(step, min(progress, 1.0))
            step += 1
            step_start = None
            samples += out.n_samples
            if step == 1 or step % 25 == 0 or step == config.steps:
                history.append({"step": step, "loss": float(out.loss.detach()), "psnr": out.psnr, "stage": out.stage,
                                "seconds": time.perf_counter() - start, **out.parts})
            if by_time:
                bar.update(min(round(time.perf_counter() - start), bar.total) - bar.n)
            else:
                bar.update(1)
            postfix = {"step": step, "rays": runner.batch_rays, "samples": out.n_samples}
            if distill:
                postfix["stage"] = out.stage
            if not math.isnan(out.psnr):
                postfix["psnr"] = f"{out.psnr:.2f}"
            bar.set_postfix(postfix, refresh=False)
            if ckpt is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        if ckpt is not None:
            checkpoint(step_start)
            bar.write(f"interrupted at step {step}; resume with --resume from {ckpt}")
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    if ckpt is not None:
        checkpoint()
    return TrainResult(step, elapsed, samples, history)


def restore_training_checkpoint(ckpt: Path, student: Representation, generator: torch.Generator, objective: Any):
    """Load a ``save_training_checkpoint`` file into ``student``, ``generator`` and ``objective``;
    returns its step, elapsed seconds, samples, batch size and a fresh optimiser holding its state."""
    tensors, meta = read_checkpoint(ckpt)
    if meta.get("kind") != student.kind:
        raise CheckpointError(f"{ckpt}: holds a {meta.get('kind')!r} field, cannot resume a {student.kind!r} run")
    saved = field_from_checkpoint(tensors, meta, ckpt)
    ours, theirs = student.config_dict(), saved.config_dict()  # without runtime choices such as the backend
    if ours != theirs:
        diff = ", ".join(f"{k}: run {ours[k]!r} vs checkpoint {theirs.get(k)!r}" for k in ours if ours[k] != theirs.get(k))
        raise CheckpointError(f"{ckpt}: was written with other {student.kind} options ({diff}); resume with the "
                              f"options of the interrupted run")
    student.prepare_state(saved.state_dict())
    student.load_state_dict(saved.state_dict())
    opt = make_optimizer(student)
    try:
        load_optimizer_state(opt, tensors, meta["optim_groups"])
        generator.set_state(tensors["train.generator"])
        step, elapsed, samples = int(meta["train_step"]), float(meta["train_elapsed"]), int(meta["train_samples"])
        batch_rays = int(meta["train_batch_rays"])
        objective.load({k[len("objective."):]: v for k, v in tensors.items() if k.startswith("objective.")})
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: not a resumable training checkpoint ({exc})") from None
    return step, elapsed, samples, batch_rays, opt
