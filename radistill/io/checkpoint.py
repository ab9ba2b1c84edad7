"""radistill's checkpoint: one ``.safetensors`` file per field.

The metadata holds ``format`` ("radistill"), ``format_version``, ``kind``, the JSON
``config`` and ``aabb``, plus whatever the writer adds (the training cameras, the training
state). Nothing is unpickled. Writes are atomic: a temporary file in the same folder is
renamed over the target, so an interrupted write never leaves a corrupt file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from radistill.errors import CheckpointError, ConfigError
from radistill.fields.base import KINDS, Representation, config_from_dict, kind_class

FORMAT = "radistill"
FORMAT_VERSION = 1
FIELD_PREFIX = "field."


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_field(path: str | Path, field: Representation, extra_tensors: dict[str, Tensor] | None = None,
               extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``field`` (and optional extra tensors/metadata) atomically to ``path``."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {FIELD_PREFIX + k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    meta = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": field.kind,
        "config": json.dumps(field.config_dict()), "aabb": json.dumps(field.aabb.tolist()),
    }
    for k, v in (extra_metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a radistill checkpoint, with clear errors for bad files."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a .safetensors checkpoint")
    data = path.read_bytes()
    try:
        tensors = load(data)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        hint = " (it looks like a pickle/zip file: radistill never unpickles)" if data[:2] in (b"PK", b"\x80\x02") else ""
        raise CheckpointError(f"{path}: not a readable safetensors file, it may be truncated or foreign{hint}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file but not a radistill checkpoint (no 'format: radistill' metadata)")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version} is newer than this radistill understands ({FORMAT_VERSION})")
    return tensors, meta


def field_from_checkpoint(tensors: dict[str, Tensor], meta: dict[str, str], path: str | Path = "checkpoint",
                          device: str | torch.device = "cpu") -> Representation:
    """Rebuild the right class from ``kind`` and load its tensors, checking every shape."""
    kind = meta.get("kind", "")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    cls = kind_class(kind)
    try:
        config = config_from_dict(cls.Config, json.loads(meta["config"]), source=f"{path} config")
        aabb = torch.tensor(json.loads(meta["aabb"]), dtype=torch.float32)
        field = cls(config, aabb)
    except (KeyError, json.JSONDecodeError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: its config or aabb metadata is invalid: {exc}") from None
    state = {k[len(FIELD_PREFIX):]: v for k, v in tensors.items() if k.startswith(FIELD_PREFIX)}
    field.prepare_state(state)
    expected = field.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {list(state[k].shape)} vs config {list(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        if wrong:
            parts.append("shape mismatch " + "; ".join(wrong[:5]))
        raise CheckpointError(f"{path}: tensors do not match its {kind} config: " + ", ".join(parts))
    field.load_state_dict(state, strict=True)
    return field.to(device)


def load_field(path: str | Path, device: str | torch.device = "cpu") -> Representation:
    """Load any radistill field checkpoint.

    Example:
        >>> field = load_field("outputs/demo/hashgrid.safetensors")
    """
    tensors, meta = read_checkpoint(path)
    return field_from_checkpoint(tensors, meta, path, device)


def checkpoint_cameras(path: str | Path):
    """The training cameras stored in a checkpoint (its pose distribution), or ``None``."""
    return cameras_from_metadata(read_checkpoint(path)[1], path)


def checkpoint_background(path: str | Path) -> Tensor | None:
    """The background colour a checkpoint's field was trained on, or ``None``.  # [3]"""
    return background_from_metadata(read_checkpoint(path)[1], path)


def cameras_from_metadata(meta: dict[str, str], path: str | Path = "checkpoint"):
    from radistill.cameras import Cameras

    if "cameras" not in meta:
        return None
    try:
        return Cameras.from_dict(json.loads(meta["cameras"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its 'cameras' metadata is malformed ({exc})") from None


def background_from_metadata(meta: dict[str, str], path: str | Path = "checkpoint") -> Tensor | None:
    if "background" not in meta:
        return None
    try:
        value = torch.tensor(json.loads(meta["background"]), dtype=torch.float32)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its 'background' metadata is malformed ({exc})") from None
    if value.shape != (3,):
        raise CheckpointError(f"{path}: 'background' must be 3 numbers, got {value.tolist()}")
    return value
