"""radistill: convert, distill and relight radiance fields.

The heavy modules load lazily so that ``import radistill`` and ``radistill --help`` stay fast.

Example:
    >>> import radistill
    >>> scene = radistill.load_scene("../shared/data/nerf_synthetic/lego", downscale=8)
    >>> field = radistill.load_field("outputs/demo/hashgrid.safetensors")
    >>> mlp = radistill.convert("outputs/demo/hashgrid.safetensors", to="mlp").student
"""

from __future__ import annotations

from typing import Any

from radistill.errors import RadistillError

__version__ = "0.1.0"

_LAZY = {
    "load_scene": ("radistill.datasets", "load_scene"),
    "make_builtin_scene": ("radistill.datasets.procedural", "make_builtin_scene"),
    "create_field": ("radistill.fields", "create_field"),
    "load_field": ("radistill.io.checkpoint", "load_field"),
    "save_field": ("radistill.io.checkpoint", "save_field"),
    "train": ("radistill.distill.engine", "train"),
    "convert": ("radistill.conversion", "convert"),
    "ConvertConfig": ("radistill.conversion", "ConvertConfig"),
}

__all__ = ["RadistillError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'radistill' has no attribute {name!r}")
