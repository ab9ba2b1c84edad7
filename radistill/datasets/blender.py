"""NeRF Blender format: ``transforms_{train,val,test}.json`` with ``camera_angle_x``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from radistill.cameras import Cameras
from radistill.datasets.scene import SceneData, check_poses, composite, holdout_split, load_images
from radistill.errors import DatasetError

SPLIT_FILES = ("train", "val", "test")


def read_transforms(path: Path) -> dict:
    """Parse one transforms file with errors that name it."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise DatasetError(f"{path}: expected an object with a 'frames' list")
    for i, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict):
            raise DatasetError(f"{path}: frame {i} is not an object")
    return meta


def camera_angle(meta: dict, source: Path) -> float:
    """The horizontal field of view ``camera_angle_x`` of a transforms file, checked (radians)."""
    if "camera_angle_x" not in meta:
        raise DatasetError(f"{source}: missing 'camera_angle_x'")
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
        raise DatasetError(f"{source}: 'camera_angle_x' must be a field of view in radians, got {angle!r}")
    return float(angle)


def frame_image_path(root: Path, frame: dict, source: Path, index: int) -> Path:
    if "file_path" not in frame:
        raise DatasetError(f"{source}: frame {index} has no 'file_path'")
    p = root / frame["file_path"]
    if p.suffix == "":
        p = p.with_suffix(".png")
    return p


def frame_matrix(frame: dict, source: Path, index: int) -> np.ndarray:
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except KeyError:
        raise DatasetError(f"{source}: frame {index} has no 'transform_matrix'") from None
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: frame {index} 'transform_matrix' is not a 4x4 list of numbers") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise DatasetError(f"{source}: frame {index} 'transform_matrix' has shape {m.shape}, expected 4x4")
    return m[:3, :4]


def load_blender(root: str | Path, downscale: float = 1.0, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 aabb_half: float = 1.5) -> SceneData:
    """Read a NeRF Blender scene.

    Args:
        root: folder with ``transforms_train.json`` (and optionally ``_val``/``_test``).
        downscale: divide width and height by this (8 turns 800x800 into 100x100).
        background: colour the RGBA images are composited on.
        aabb_half: half size of the cube that bounds the scene, unless the file has ``aabb``.
    """
    root = Path(root)
    metas: dict[str, dict] = {}
    for split in SPLIT_FILES:
        p = root / f"transforms_{split}.json"
        if p.exists():
            metas[split] = read_transforms(p)
    if "train" not in metas:
        raise DatasetError(f"{root}: no transforms_train.json (NeRF Blender format expected)")

    paths, mats, counts = [], [], {}
    for split, meta in metas.items():
        source = root / f"transforms_{split}.json"
        camera_angle(meta, source)
        split_mats = [frame_matrix(frame, source, i) for i, frame in enumerate(meta["frames"])]
        if split_mats:
            check_poses(np.stack(split_mats), source)
        paths += [frame_image_path(root, frame, source, i) for i, frame in enumerate(meta["frames"])]
        mats += split_mats
        counts[split] = len(meta["frames"])
    if not mats:
        raise DatasetError(f"{root / 'transforms_train.json'}: 'frames' is empty")
    c2w = np.stack(mats)
    rgba = load_images(paths, root, downscale)
    bg = np.asarray(background, dtype=np.float32)
    n, h, w = rgba.shape[:3]
    focal = 0.5 * w / math.tan(0.5 * float(metas["train"]["camera_angle_x"]))

    n_train = counts["train"]
    if "test" in metas:
        train_idx = list(range(n_train))
        test_start = n_train + counts.get("val", 0)
        test_idx = list(range(test_start, test_start + counts["test"]))
        holdout = "file"
    else:
        train_idx, test_idx = holdout_split(n_train)
        holdout = "i%8==0"
    aabb_list = metas["train"].get("aabb")
    aabb = torch.tensor(aabb_list, dtype=torch.float32) if aabb_list else torch.tensor([[-aabb_half] * 3, [aabb_half] * 3])
    cams = Cameras(torch.from_numpy(c2w).float(), torch.tensor(focal), torch.tensor(focal),
                   torch.tensor(w / 2.0), torch.tensor(h / 2.0), w, h, near=0.05, far=1e3)
    extras = load_extras(root, metas, downscale, (h, w))
    return SceneData(root.name, torch.from_numpy(composite(rgba, bg)), cams, train_idx, test_idx, aabb,
                     torch.from_numpy(bg), torch.from_numpy(rgba[..., 3].copy()), extras, holdout)


def load_extras(root: Path, metas: dict[str, dict], downscale: float, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Ground-truth maps listed per frame as ``depth_file_path`` / ``normal_file_path`` (.npy)."""
    extras: dict[str, torch.Tensor] = {}
    for key, name in (("depth_file_path", "depth"), ("normal_file_path", "normal")):
        frames = [f for meta in metas.values() for f in meta["frames"]]
        if not frames or not all(key in f for f in frames):
            continue
        if downscale != 1.0:
            continue  # ground-truth maps are only used at their native resolution
        maps = []
        for f in frames:
            p = root / f[key]
            try:
                maps.append(np.load(p, allow_pickle=False))
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{root}: cannot read {name} map {p} ({exc})") from None
        extras[name] = torch.from_numpy(np.stack(maps)).float()
    return extras
