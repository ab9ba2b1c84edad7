"""The representation contract and the registry of kinds.

Every representation answers two questions, and that is all a distillation needs:

* ``query(x, d)``: the volume view of the scene at points ``x`` seen from directions ``d``
  (density, colour, and for neural fields the 16-d junction);
* ``render(rays)``: the kind's own best renderer.

The registry maps each ``kind`` name to its class without importing it, so that listing kinds
and parsing CLI options stays cheap and no module registers itself by import side effect.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
from torch import Tensor, nn

from radistill.errors import ConfigError

JUNCTION_DIM = 16

# kind -> "module:Class"; adding a representation means adding one line here.
KINDS: dict[str, str] = {
    "mlp": "radistill.fields.mlp:MLPField",
    "hashgrid": "radistill.fields.hashgrid:HashGridField",
    "tensorf-vm": "radistill.fields.tensorf:TensoRFVMField",
    "tensorf-cp": "radistill.fields.tensorf:TensoRFCPField",
    "gaussians": "radistill.fields.gaussians:GaussiansField",
    "mesh": "radistill.fields.mesh:MeshField",
}
RUNTIME_OPTIONS = ("backend",)
"""Config fields that choose kernels, not the field: not saved; a loaded field uses their defaults."""
NEURAL_KINDS = ("mlp", "hashgrid", "tensorf-vm", "tensorf-cp")
"""The kinds made of an encoder, the junction and the shared colour decoder."""


@dataclass
class FieldOutputs:
    """Point-level answer of a representation."""

    sigma: Tensor  # [N] volume density
    rgb: Tensor  # [N, 3] colour in [0, 1]
    junction: Tensor | None = None  # [N, 16] raw log-density + 15 features (neural kinds)


@dataclass
class RenderOutputs:
    """Ray-level answer of a representation."""

    rgb: Tensor  # [R, 3] composited on the background
    depth: Tensor  # [R] expected distance along the ray (in ray parameter units)
    opacity: Tensor  # [R] accumulated alpha
    weights: Tensor | None = None  # [M] per-sample weights of the packed samples
    ray_ids: Tensor | None = None  # [M] ray index of each packed sample
    positions: Tensor | None = None  # [M, 3] packed sample positions
    n_samples: int = 0  # number of samples the field was queried at


class Representation(nn.Module):
    """Base class of every kind. Subclasses set ``kind`` and ``Config``."""

    kind: ClassVar[str]
    Config: ClassVar[type]
    student_batch_rays: ClassVar[int] = 1024
    """Rays per step that suit the kind as a distillation student (an upper bound; the engine
    adapts it to a sample budget). Measured on lego: many smaller steps beat fewer large ones."""
    student_stage_steps: ClassVar[tuple[int, int, int]] = (400, 600, 2000)
    """Steps of the three distillation stages that suit the kind as a student, when the user
    gives none (``DistillConfig.for_student``); under a time budget, their shares of the time."""

    def __init__(self, config: Any, aabb: Tensor) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise ConfigError(f"{self.kind}: aabb must be [2, 3] with max > min, got {aabb.tolist()}")
        self.config = config
        self.register_buffer("aabb", aabb.clone())

    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        """Density and colour at points ``x`` [N, 3] seen along unit directions ``d`` [N, 3]."""
        raise NotImplementedError

    def density(self, x: Tensor) -> Tensor:
        """Density alone at points ``x`` [N, 3] (no colour work).  # [N]"""
        raise NotImplementedError

    def empty_mask(self, x: Tensor) -> Tensor | None:
        """Where the kind's own renderer skips space at points ``x`` [N, 3] (it treats the density
        there as zero), or ``None`` when it skips nothing.  # [N] bool"""
        return None

    bounds_density: ClassVar[bool] = False
    """Whether the kind answers ``max_density_near`` (a student's occupancy grid then comes from
    that bound at its cell centres instead of from jittered samples)."""

    density_loss_scale: ClassVar[float] = 1.0
    """As a teacher, the factor on the distillation's log-density loss (``DistillConfig.density_weight``)."""

    def max_density_near(self, x: Tensor, radius: float) -> Tensor:
        """An upper bound of the visible density within ``radius`` of points ``x`` [N, 3], for kinds
        whose density lies in shells thinner than a student's cells (a mesh), which samples miss.  # [N]"""
        raise NotImplementedError(f"{self.kind} does not bound its density")

    def visible_density(self, x: Tensor) -> Tensor:
        """Density as the kind's renderer sees it: zero where it skips space.  # [N]"""
        sigma = self.density(x)
        empty = self.empty_mask(x)
        return sigma if empty is None else torch.where(empty, torch.zeros_like(sigma), sigma)

    def render(self, rays: Any, background: Tensor | None = None, **options: Any) -> RenderOutputs:
        """Render a batch of rays with the kind's own renderer."""
        raise NotImplementedError

    def render_image(self, cameras: Any, index: int, background: Tensor | None = None,
                     chunk: int = 8192) -> dict[str, Tensor]:
        """One whole image of ``cameras[index]`` at bounded memory: ``rgb`` [H, W, 3], ``depth`` and
        ``opacity`` [H, W]. The default renders the image's rays in chunks; rasterising kinds
        draw the image directly."""
        from radistill.render.volume import render_in_chunks

        rays = cameras.image_rays(index).to(self.aabb.device)
        out = render_in_chunks(lambda r: self.render(r, background, window=64), rays, chunk)
        h, w = cameras.height, cameras.width
        return {"rgb": out["rgb"].reshape(h, w, 3), "depth": out["depth"].reshape(h, w),
                "opacity": out["opacity"].reshape(h, w)}

    @classmethod
    def from_teacher(cls, teacher: "Representation", config: Any = None, views: Any = None) -> "Representation":
        """A geometry-aware start from any teacher, through the contract only.

        ``views`` (``Cameras``, optional) are poses the teacher is meant to be seen from, for
        kinds that look at the teacher's renders. The result is ready for the distill engine
        (``radistill.distill``), which does the fitting.
        """
        raise ConfigError(f"{cls.kind}: initialisation from a teacher is not available yet")

    # ---- training hooks (defaults suit most kinds)
    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups with their learning rates."""
        return [{"params": list(self.parameters()), "lr": 1e-3}]

    def on_train_step(self, step: int, generator: torch.Generator | None = None, progress: float = 0.0) -> bool:
        """Called before each training step (``progress`` in [0, 1] of the run); return True when
        parameters were replaced (the engine then rebuilds the optimiser and calls
        ``carry_optimizer_state``)."""
        return False

    def carry_optimizer_state(self, old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> None:
        """Move what still applies of ``old``'s state into ``new`` after parameters were replaced
        (default: nothing, the new optimiser starts fresh)."""

    def prepare_state(self, state: dict[str, Tensor]) -> None:
        """Adapt parameter shapes to a saved state before loading it (e.g. an upsampled grid)."""

    def config_dict(self) -> dict[str, Any]:
        """The config as saved with the weights: without the options that only choose how to
        compute (``RUNTIME_OPTIONS``), so that a field trained with Triton on a GPU loads anywhere."""
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k not in RUNTIME_OPTIONS}


def render_volumetric(field: Representation, rays: Any, volume_step: int, background: Tensor | None = None,
                      perturb: bool = False, generator: torch.Generator | None = None,
                      window: int | None = None, occupancy: Any = None) -> RenderOutputs:
    """Volume rendering of ``field.query`` along rays, ``volume_step`` samples along the aabb
    diagonal: the ray renderer of kinds whose own renderer draws whole images (Gaussians, meshes)
    and of imported fields; ``occupancy`` (an ``OccupancyGrid``) skips empty cells."""
    from radistill.render.volume import render_rays

    step = float((field.aabb[1] - field.aabb[0]).norm()) / volume_step

    def sigma_rgb(x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        out = field.query(x, d)
        return out.sigma, out.rgb

    out = render_rays(sigma_rgb, rays, field.aabb, step, occupancy, background, perturb, generator, 1e-4, window)
    samples = out.samples
    return RenderOutputs(out.rgb, out.depth, out.opacity, out.weights,
                         None if samples is None else samples.ray_ids,
                         None if samples is None else samples.positions, out.n_samples)


def kind_class(kind: str) -> type[Representation]:
    """The class registered for ``kind``, imported on first use."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def parse_key_values(items: Iterable[str], flag: str = "--set") -> dict[str, Any]:
    """``key=value`` words as given on a command line (``flag`` names them in errors); each value
    is read as JSON where it is JSON (numbers, booleans, lists), else kept as a string."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_from_dict(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build a config dataclass from JSON values, with clear errors for unknown keys and wrong types."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown {cls.__name__} fields {unknown}; expected some of {sorted(known)}")
    defaults = cls()
    converted = {}
    for key, value in values.items():
        converted[key] = _coerce(getattr(defaults, key), value, f"{source}: {key}")
    return cls(**converted)


def _coerce(default: Any, value: Any, where: str) -> Any:
    """``value`` in the type of ``default`` (bool, int, float, str or a tuple of those)."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, tuple):
        if isinstance(value, (list, tuple)):
            inner = default[0] if default else 0
            return tuple(_coerce(inner, v, where) for v in value)
    elif default is None or isinstance(default, str):
        return value
    raise ConfigError(f"{where} must be {type(default).__name__}, got {value!r}")
