"""Reading other programs' checkpoints without running their code.

Foreign ``.th`` / ``.ckpt`` files are pickles. radistill never unpickles them freely:
``torch.load(weights_only=True)`` rebuilds only tensors, containers and numbers, plus an
allow-list of numpy's arrays and scalars (TensoRF stores its packed occupancy mask as a numpy
array, nerfstudio's optimiser state holds numpy learning rates). Anything else (a pickled class, a function) is refused with a ``CheckpointError`` that
says what was found.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from radistill.errors import CheckpointError


def _numpy_globals() -> list[Any]:
    import numpy as np

    try:  # numpy 2 moved numpy.core to numpy._core (numpy 1.26 has only a stub package of that name)
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    reconstruct = multiarray._reconstruct
    scalar = multiarray.scalar  # numpy scalars (nerfstudio's learning rates are np.float64)
    allowed: list[Any] = [reconstruct, scalar, np.ndarray, np.dtype,
                          # files written under numpy 1.x name these numpy.core.multiarray.*
                          (reconstruct, "numpy.core.multiarray._reconstruct"),
                          (reconstruct, "numpy._core.multiarray._reconstruct"),
                          (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    # the dtype classes (numpy.dtypes.UInt8DType, ...) that arrays and scalars are rebuilt with
    allowed += [type(np.dtype(t)) for t in (np.uint8, np.float32, np.float16, np.float64, np.int64, np.int32, np.bool_)]
    return allowed


def load_pickled_weights(path: str | Path, what: str) -> Any:
    """A foreign torch pickle loaded safely (tensors, containers, numbers, numpy arrays).

    Args:
        path: the file.
        what: what the file should be, for messages ("a TensoRF checkpoint").
    Raises:
        CheckpointError: missing, truncated, or needing arbitrary code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(f"{path}: {what} holds only tensors, numbers and numpy arrays, but this file needs "
                                  f"the Python object {found.group(1)} to be unpickled; radistill does not run code "
                                  "from checkpoints") from None
        raise CheckpointError(f"{path}: not readable as {what} ({_first_sentence(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not readable as {what} ({_first_sentence(exc)})") from None


def _first_sentence(exc: Exception) -> str:
    return str(exc).splitlines()[0].split(". ")[0] if str(exc) else type(exc).__name__
