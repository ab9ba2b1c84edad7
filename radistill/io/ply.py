"""3D Gaussian Splatting files: the PLY of the graphdeco code (and its variants) and ``.splat``.

Reading goes by the PLY header, never by an assumed layout: ``binary_little_endian``,
``binary_big_endian`` or ``ascii``; the properties of ``element vertex`` in any order and of any
scalar type (integer types are converted by value, not rescaled); ``nx ny nz`` and unknown
properties are ignored; ``f_rest_*`` may be absent (SH degree 0) or hold 9, 24 or 45 values
(degrees 1-3), channel-major as graphdeco writes them: ``f_rest_0..M-1`` are the red
coefficients 1..M, then green, then blue. Elements after ``vertex`` (faces, ...) are ignored;
elements before it are skipped when their rows have a fixed size, and rejected in a binary file
when they hold list properties (their size cannot be known without parsing them).

Writing produces exactly the graphdeco layout (binary little endian float32, normals zero) and
reading it back gives identical tensors. ``.splat`` is the 32-byte-record format of
antimatter15's WebGL viewer; it is lossy (colour, opacity and rotation are 8-bit, SH degree 0).
Every write is atomic.

Example:
    >>> g = read_gaussian_ply("point_cloud.ply")
    >>> len(g), g.sh_degree
    (45624, 0)
    >>> write_splat("scene.splat", g)
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from radistill.errors import DatasetError
from radistill.fields.sh import C0 as SH_C0
from radistill.io.checkpoint import atomic_write_bytes

__all__ = ["GaussianArrays", "PlyError", "PlyWarning", "read_gaussian_ply", "write_gaussian_ply",
           "read_splat", "splat_order", "write_splat"]

MAX_SH_DEGREE = 3
MAX_HEADER_BYTES = 1 << 20
SPLAT_RECORD_BYTES = 32

# PLY scalar type names (the 1.0 spec's and the sized aliases) -> numpy kind+size, byte order added later.
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
F_REST = re.compile(r"f_rest_(\d+)$")
# The .splat record: position, activated scale, RGBA and the normalised wxyz quaternion as bytes.
SPLAT_DTYPE = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rot", "u1", (4,))])


class PlyError(DatasetError):
    """A Gaussian splat file (``.ply`` or ``.splat``) is malformed or holds no usable Gaussian."""


class PlyWarning(UserWarning):
    """Some rows of a Gaussian file were unusable (NaN/inf, zero quaternion) and were dropped."""


@dataclass
class GaussianArrays:
    """Pre-activation 3DGS parameters, float32, as stored in a graphdeco PLY.

    Activations: ``exp(log_scales)``, ``sigmoid(logit_opacities)``, ``normalize(quats)``; colour
    is ``0.5 + SH(sh)`` (``sh[:, 0]`` are the ``f_dc`` values).
    """

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz, as stored (not normalised)
    log_scales: Tensor  # [N, 3]
    logit_opacities: Tensor  # [N]
    sh: Tensor  # [N, K, 3], K = (degree + 1)^2; sh[:, k, c] is coefficient k of channel c

    @property
    def sh_degree(self) -> int:
        """The spherical-harmonics degree (0..3) implied by ``sh.shape[1]``."""
        return round(self.sh.shape[1] ** 0.5) - 1

    def __len__(self) -> int:
        return self.means.shape[0]

    def validate(self, source: str | Path = "Gaussian arrays") -> None:
        """Check dtypes and shapes (not values); raise :class:`PlyError` naming ``source`` otherwise."""
        n = len(self)
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "logit_opacities": (n,)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise PlyError(f"{source}: '{name}' has shape {list(getattr(self, name).shape)}, expected {list(shape)}")
        k = self.sh.shape[1] if self.sh.dim() == 3 else -1
        valid_k = [(d + 1) ** 2 for d in range(MAX_SH_DEGREE + 1)]
        if self.sh.dim() != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or k not in valid_k:
            raise PlyError(f"{source}: 'sh' has shape {list(self.sh.shape)}, expected [{n}, K, 3] with K in {valid_k}")
        for f in fields(self):
            if getattr(self, f.name).dtype != torch.float32:
                raise PlyError(f"{source}: '{f.name}' is {getattr(self, f.name).dtype}, expected torch.float32")

    def subset(self, index: Tensor) -> GaussianArrays:
        """The rows picked by a boolean mask or an index tensor, in that order."""
        return GaussianArrays(*(getattr(self, f.name)[index] for f in fields(self)))


# ----------------------------------------------------------------------------- PLY header


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str]]  # (name, ply type); a list property has type "list:<count>:<item>"

    def row_bytes(self) -> int | None:
        """The size of one binary row, or ``None`` when a row holds a list (its size varies)."""
        if any(t.startswith("list:") for _, t in self.props):
            return None
        return sum(np.dtype(PLY_TYPES[t]).itemsize for _, t in self.props)

    def row_dtype(self, order: str) -> np.dtype:
        """The packed structured dtype of one row of scalars in byte ``order`` ('<' or '>')."""
        return np.dtype({"names": [n for n, _ in self.props], "formats": [order + PLY_TYPES[t] for _, t in self.props]})


def _read_header(f: BinaryIO, path: Path) -> tuple[str, list[_Element]]:
    """Parse the header of an open PLY file up to and including ``end_header``; ``f`` is left at the body."""
    magic = f.readline(8).rstrip(b"\r\n")
    if magic != b"ply":
        raise PlyError(f"{path}: not a PLY file (it starts with {magic[:8]!r}, expected the magic line 'ply')")
    fmt, elements, read = None, [], 0
    while True:
        raw = f.readline(MAX_HEADER_BYTES)
        read += len(raw)
        if not raw or read > MAX_HEADER_BYTES:
            raise PlyError(f"{path}: the PLY header has no 'end_header' line (file truncated or not a PLY header)")
        line = raw.decode("ascii", errors="replace").strip()
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            if len(words) != 3 or words[1] not in FORMATS:
                raise PlyError(f"{path}: unknown PLY format line {line!r}, expected 'format <{'|'.join(FORMATS)}> 1.0'")
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyError(f"{path}: malformed header line {line!r}, expected 'element <name> <count>'")
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property":
            elements_props = _parse_property(words, line, path)
            if not elements:
                raise PlyError(f"{path}: header line {line!r} comes before any 'element' line")
            elements[-1].props.append(elements_props)
        else:
            raise PlyError(f"{path}: unexpected PLY header line {line!r}")
    if fmt is None:
        raise PlyError(f"{path}: the PLY header has no 'format' line")
    return fmt, elements


def _parse_property(words: list[str], line: str, path: Path) -> tuple[str, str]:
    """``property <type> <name>`` or ``property list <count type> <item type> <name>``."""
    if len(words) == 5 and words[1] == "list":
        types = words[2:4]
        result = (words[4], f"list:{words[2]}:{words[3]}")
    elif len(words) == 3:
        types = [words[1]]
        result = (words[2], words[1])
    else:
        raise PlyError(f"{path}: malformed header line {line!r}, expected 'property <type> <name>'")
    for t in types:
        if t not in PLY_TYPES:
            raise PlyError(f"{path}: header line {line!r} has unknown property type {t!r} "
                           f"(known: {', '.join(PLY_TYPES)})")
    return result


def _vertex_element(elements: list[_Element], path: Path) -> tuple[int, _Element]:
    """The index and description of ``element vertex``, with its properties checked."""
    index = next((i for i, e in enumerate(elements) if e.name == "vertex"), None)
    if index is None:
        raise PlyError(f"{path}: the PLY header has no 'element vertex' (found: {[e.name for e in elements]})")
    vertex = elements[index]
    names = [n for n, _ in vertex.props]
    if len(set(names)) != len(names):
        raise PlyError(f"{path}: element vertex declares a property twice: "
                       f"{sorted({n for n in names if names.count(n) > 1})}")
    lists = [n for n, t in vertex.props if t.startswith("list:")]
    if lists:
        raise PlyError(f"{path}: element vertex has list properties {lists}; a 3DGS vertex holds scalars only")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise PlyError(f"{path}: element vertex lacks required properties {missing} (a 3DGS PLY needs "
                       "x y z, f_dc_0..2, opacity, scale_0..2, rot_0..3)")
    return index, vertex


def _sh_rest_count(names: list[str], path: Path) -> int:
    """The number M of ``f_rest_*`` properties, checked to be 0..M-1 with M = 3 * ((d + 1)^2 - 1)."""
    indices = sorted(int(m.group(1)) for n in names if (m := F_REST.match(n)))
    valid = [3 * ((d + 1) ** 2 - 1) for d in range(MAX_SH_DEGREE + 1)]
    if len(indices) not in valid:
        raise PlyError(f"{path}: element vertex has {len(indices)} f_rest_* properties, expected one of {valid} "
                       f"(3 * ((degree + 1)^2 - 1) for SH degree 0..{MAX_SH_DEGREE})")
    if indices != list(range(len(indices))):
        gaps = sorted(set(range(len(indices))) - set(indices))
        raise PlyError(f"{path}: the f_rest_* properties are not numbered 0..{len(indices) - 1} (missing {gaps[:5]})")
    return len(indices)


# ----------------------------------------------------------------------------- PLY body


def _read_binary_columns(f: BinaryIO, path: Path, order: str, elements: list[_Element],
                         index: int) -> np.ndarray:
    """The vertex rows of a binary PLY as a structured array, skipping fixed-size elements before them."""
    skip = 0
    for e in elements[:index]:
        size = e.row_bytes()
        if size is None:
            raise PlyError(f"{path}: element {e.name!r} before 'vertex' has list properties; this reader can only "
                           "skip fixed-size elements that precede the vertices in a binary PLY")
        skip += e.count * size
    vertex = elements[index]
    dtype = vertex.row_dtype(order)
    body_start = f.tell()
    present = os.fstat(f.fileno()).st_size - body_start - skip
    needed = vertex.count * dtype.itemsize
    if present < needed:
        raise PlyError(f"{path}: truncated PLY body: element vertex needs {needed} bytes ({vertex.count} rows x "
                       f"{dtype.itemsize} bytes) after {skip} bytes of earlier elements, but only {max(present, 0)} "
                       "are present")
    f.seek(body_start + skip)
    return np.frombuffer(f.read(needed), dtype=dtype, count=vertex.count)


def _read_ascii_columns(f: BinaryIO, path: Path, elements: list[_Element], index: int) -> np.ndarray:
    """The vertex rows of an ASCII PLY (one row per line) as a float64 structured array."""
    lines = f.read().decode("ascii", errors="replace").splitlines()
    lines = [ln for ln in lines if ln.strip()]
    start = sum(e.count for e in elements[:index])
    vertex = elements[index]
    rows = lines[start:start + vertex.count]
    if len(rows) < vertex.count:
        raise PlyError(f"{path}: truncated PLY body: element vertex needs {vertex.count} lines after {start} lines "
                       f"of earlier elements, but only {len(rows)} are present")
    try:
        values = np.array([r.split() for r in rows], dtype=np.float64).reshape(vertex.count, len(vertex.props))
    except ValueError:
        raise PlyError(f"{path}: an ASCII vertex line does not hold {len(vertex.props)} numbers") from None
    dtype = np.dtype([(n, "f8") for n, _ in vertex.props])
    return np.ascontiguousarray(values).view(dtype).reshape(vertex.count)


def _columns_to_arrays(rows: np.ndarray, rest: int) -> GaussianArrays:
    """Map named vertex columns to :class:`GaussianArrays` (f_rest channel-major -> sh[:, 1:, c])."""
    def stack(names: list[str]) -> np.ndarray:  # [N, len(names)] float32
        out = np.empty((len(rows), len(names)), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # doubles beyond float32 become inf: dropped later
            for i, name in enumerate(names):
                out[:, i] = rows[name]
        return out

    n, k = len(rows), rest // 3 + 1
    dc = stack([f"f_dc_{c}" for c in range(3)])  # [N, 3]
    higher = stack([f"f_rest_{i}" for i in range(rest)]).reshape(n, 3, k - 1).transpose(0, 2, 1)  # [N, K-1, 3]
    sh = np.concatenate([dc[:, None, :], higher], axis=1)  # [N, K, 3]
    return GaussianArrays(
        means=torch.from_numpy(stack(["x", "y", "z"])),
        quats=torch.from_numpy(stack([f"rot_{i}" for i in range(4)])),
        log_scales=torch.from_numpy(stack([f"scale_{i}" for i in range(3)])),
        logit_opacities=torch.from_numpy(stack(["opacity"])[:, 0].copy()),  # [N]
        sh=torch.from_numpy(np.ascontiguousarray(sh)),
    )


def _bad_rows(g: GaussianArrays) -> tuple[Tensor, Tensor]:
    """Masks [N] of rows with a non-finite value, and of rows whose quaternion has zero norm."""
    values = torch.cat([g.means, g.quats, g.log_scales, g.logit_opacities[:, None], g.sh.flatten(1)], dim=1)
    nonfinite = ~torch.isfinite(values).all(dim=1)
    zero_quat = (g.quats.double().square().sum(dim=1) == 0) & ~nonfinite
    return nonfinite, zero_quat


def _drop_bad_rows(g: GaussianArrays, path: Path) -> GaussianArrays:
    """Drop NaN/inf rows and zero quaternions with a :class:`PlyWarning`; raise when nothing is left."""
    if len(g) == 0:
        raise PlyError(f"{path}: the file holds no Gaussians (element vertex count is 0)")
    nonfinite, zero_quat = _bad_rows(g)
    bad = nonfinite | zero_quat
    dropped = int(bad.sum())
    if dropped == len(g):
        raise PlyError(f"{path}: all {len(g)} Gaussians are unusable ({int(nonfinite.sum())} with NaN/inf values, "
                       f"{int(zero_quat.sum())} with a zero-norm quaternion)")
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} of {len(g)} Gaussians ({int(nonfinite.sum())} with NaN/inf "
                      f"values, {int(zero_quat.sum())} with a zero-norm quaternion)", PlyWarning, stacklevel=3)
        g = g.subset(~bad)
    return g


def read_gaussian_ply(path: str | Path) -> GaussianArrays:
    """Read any 3DGS PLY by its header (see the module docstring for what is accepted).

    Rows with NaN/inf values or a zero-norm quaternion are dropped with a :class:`PlyWarning`.

    Raises:
        PlyError: the file is missing, not a PLY, malformed, truncated, or holds no usable Gaussian.

    Example:
        >>> g = read_gaussian_ply("point_cloud/iteration_30000/point_cloud.ply")
        >>> g.sh.shape  # [N, 16, 3] for a degree-3 file
    """
    path = Path(path)
    if not path.is_file():
        raise PlyError(f"{path}: no such PLY file" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as f:
        fmt, elements = _read_header(f, path)
        index, vertex = _vertex_element(elements, path)
        rest = _sh_rest_count([n for n, _ in vertex.props], path)
        if FORMATS[fmt] is None:
            rows = _read_ascii_columns(f, path, elements, index)
        else:
            rows = _read_binary_columns(f, path, FORMATS[fmt], elements, index)
    return _drop_bad_rows(_columns_to_arrays(rows, rest), path)


def write_gaussian_ply(path: str | Path, arrays: GaussianArrays) -> Path:
    """Write ``arrays`` atomically in the graphdeco layout (binary little endian float32).

    Properties: ``x y z nx ny nz f_dc_0..2 f_rest_0..M-1 opacity scale_0..2 rot_0..3``, normals
    zero, ``f_rest`` channel-major and absent for SH degree 0. Reading the file back gives
    identical tensors.
    """
    path = Path(path)
    arrays.validate(path)
    n, k = len(arrays), arrays.sh.shape[1]
    sh = arrays.sh.detach().cpu().numpy()  # [N, K, 3]
    columns = [
        arrays.means.detach().cpu().numpy(), np.zeros((n, 3), np.float32), sh[:, 0, :],
        sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),  # channel-major f_rest
        arrays.logit_opacities.detach().cpu().numpy()[:, None],
        arrays.log_scales.detach().cpu().numpy(), arrays.quats.detach().cpu().numpy(),
    ]
    body = np.concatenate(columns, axis=1).astype("<f4")  # [N, P]
    names = (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{c}" for c in range(3)]
             + [f"f_rest_{i}" for i in range(3 * (k - 1))] + ["opacity"]
             + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    atomic_write_bytes(path, ("\n".join(header) + "\n").encode("ascii") + body.tobytes())
    return path


# ----------------------------------------------------------------------------- .splat


def splat_order(arrays: GaussianArrays) -> Tensor:
    """The record order of antimatter15's converter: descending ``exp(sum log_scales) * sigmoid(opacity)``.

    Computed in the log domain (same order, no overflow); ties keep the input order.
    """
    key = arrays.log_scales.double().sum(dim=1) + torch.nn.functional.logsigmoid(arrays.logit_opacities.double())
    return torch.argsort(-key, stable=True)  # [N]


def _to_bytes(values: Tensor) -> np.ndarray:
    """Round (half to even) and clip to 0..255, as a browser's ``Uint8ClampedArray`` stores numbers."""
    return np.clip(np.rint(values.double().numpy()), 0, 255).astype(np.uint8)


def write_splat(path: str | Path, arrays: GaussianArrays) -> Path:
    """Write ``arrays`` atomically as a ``.splat`` file (32-byte records, biggest most opaque first).

    Each record holds the position (3 float32), the activated scale ``exp(log_scales)`` (3 float32),
    RGBA bytes (``rgb = 255 * (0.5 + SH_C0 * f_dc)``, ``a = 255 * sigmoid(opacity)``) and the
    normalised wxyz quaternion as bytes ``q * 128 + 128``; bytes are rounded and clipped to 0..255.
    Only the SH degree-0 colour is kept.

    Raises:
        PlyError: ``arrays`` is malformed or holds NaN/inf values or zero-norm quaternions.
    """
    path = Path(path)
    arrays.validate(path)
    nonfinite, zero_quat = _bad_rows(arrays)
    if bool((nonfinite | zero_quat).any()):
        raise PlyError(f"{path}: cannot write {int(nonfinite.sum())} Gaussians with NaN/inf values and "
                       f"{int(zero_quat.sum())} with a zero-norm quaternion to .splat (8-bit fields)")
    g = arrays.subset(splat_order(arrays))
    records = np.empty(len(g), dtype=SPLAT_DTYPE)
    records["position"] = g.means.detach().cpu().numpy()
    records["scale"] = torch.exp(g.log_scales.detach().cpu()).numpy()
    colour = 0.5 + SH_C0 * g.sh[:, 0, :].detach().cpu().double()  # [N, 3]
    alpha = torch.sigmoid(g.logit_opacities.detach().cpu().double())  # [N]
    records["rgba"] = _to_bytes(torch.cat([colour, alpha[:, None]], dim=1) * 255)
    quats = g.quats.detach().cpu().double()
    records["rot"] = _to_bytes(quats / quats.norm(dim=1, keepdim=True) * 128 + 128)
    atomic_write_bytes(path, records.tobytes())
    return path


def read_splat(path: str | Path) -> GaussianArrays:
    """Read a ``.splat`` file back into pre-activation arrays of SH degree 0 (the lossy inverse).

    ``f_dc = (rgb / 255 - 0.5) / SH_C0``; opacities of byte 0 or 255 are clamped half a step inside
    (0, 1) so their logit stays finite; quaternions are ``(byte - 128) / 128``, not renormalised.
    """
    path = Path(path)
    if not path.is_file():
        raise PlyError(f"{path}: no such .splat file" + (" (it is a folder)" if path.is_dir() else ""))
    data = path.read_bytes()
    if len(data) % SPLAT_RECORD_BYTES:
        raise PlyError(f"{path}: a .splat file is a sequence of {SPLAT_RECORD_BYTES}-byte records, but its size "
                       f"{len(data)} is not a multiple of {SPLAT_RECORD_BYTES} (truncated?)")
    records = np.frombuffer(data, dtype=SPLAT_DTYPE)
    rgba = torch.from_numpy(records["rgba"].astype(np.float64)) / 255  # [N, 4]
    alpha = rgba[:, 3].clamp(0.5 / 255, 1 - 0.5 / 255)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scales = np.log(records["scale"])
    g = GaussianArrays(
        means=torch.from_numpy(records["position"].copy()),
        quats=torch.from_numpy((records["rot"].astype(np.float32) - 128) / 128),
        log_scales=torch.from_numpy(log_scales),
        logit_opacities=torch.logit(alpha).float(),
        sh=((rgba[:, None, :3] - 0.5) / SH_C0).float(),  # [N, 1, 3]
    )
    return _drop_bad_rows(g, path)


def arrays_of(field) -> GaussianArrays:
    """The pre-activation parameters of a ``gaussians`` field."""
    return GaussianArrays(field.means.detach().cpu().float(), field.quats.detach().cpu().float(),
                          field.log_scales.detach().cpu().float(), field.logit_opacities.detach().cpu().float(),
                          field.sh.detach().cpu().float())


def load_gaussians(path: str | Path):
    """A ``gaussians`` field from a 3DGS ``.ply`` or a ``.splat`` file (bounds from its centres).

    Example:
        >>> field = load_gaussians("point_cloud.ply")
    """
    from radistill.fields.gaussians import GaussiansField

    path = Path(path)
    arrays = read_splat(path) if path.suffix.lower() == ".splat" else read_gaussian_ply(path)
    return GaussiansField.from_params(arrays.means, arrays.quats, arrays.log_scales, arrays.logit_opacities, arrays.sh)


def save_gaussians(path: str | Path, field) -> Path:
    """Write a ``gaussians`` field as a graphdeco ``.ply`` or a ``.splat`` (by the suffix)."""
    path = Path(path)
    arrays = arrays_of(field)
    return write_splat(path, arrays) if path.suffix.lower() == ".splat" else write_gaussian_ply(path, arrays)
