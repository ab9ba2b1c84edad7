"""torchvision's Python side on the CPU build of torch, for this test environment only.

PyPI's torchvision wheels are CUDA builds: their C++ operators (``torchvision::nms`` ...) link
against libtorch_cuda and do not load with the CPU torch wheel that CI installs. torchvision's
``__init__`` then fails on registering fake kernels for two operators that do not exist. Defining
the schemas of those two (without kernels) lets ``import torchvision`` succeed; nothing here
uses those operators, and calling them would fail with "no kernel". On a machine where
torchvision's operators load (a CUDA torch, or a matching CPU torchvision), this does nothing.
"""

from __future__ import annotations

_LIBRARY = None


def install() -> None:
    global _LIBRARY
    import importlib.util
    from pathlib import Path

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or _LIBRARY is not None:
        return
    try:
        torch.ops.load_library(str(next(Path(spec.origin).parent.glob("_C*.so"))))
        return
    except (OSError, RuntimeError, StopIteration):
        pass
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        _LIBRARY.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
