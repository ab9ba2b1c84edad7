import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from radistill.datasets import detect_format, load_scene
from radistill.datasets.procedural import scene_sdf
from radistill.errors import DatasetError


def test_builtin_depth_and_normals_are_exact(tiny_scene):
    cams = tiny_scene.cameras
    for i in (0, 5):
        rays = cams.image_rays(i)
        depth = tiny_scene.extras["depth"][i].reshape(-1)
        mask = tiny_scene.alphas[i].reshape(-1) > 0
        assert mask.any() and (~mask).any()
        assert torch.equal(mask, depth > 0)
        hits = rays.origins[mask].double() + depth[mask, None].double() * rays.directions[mask].double()
        sdf, _ = scene_sdf(hits)
        assert sdf.abs().max() < 1e-3, "depth must put the point on the analytic surface"
        normals = tiny_scene.extras["normal"][i].reshape(-1, 3)[mask]
        assert torch.allclose(normals.norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-4)
        facing = (normals * rays.directions[mask]).sum(-1)
        assert (facing < 1e-3).float().mean() > 0.99, "visible normals face the camera"
    # background pixels show the background colour
    assert torch.allclose(tiny_scene.images[0][tiny_scene.alphas[0] == 0], tiny_scene.background.expand(1, 3))


def test_builtin_has_view_dependent_colour(tiny_scene):
    from radistill.datasets.procedural import PRIMITIVES, scene_normal, shade

    p = torch.tensor([[PRIMITIVES[1].center[0], PRIMITIVES[1].center[1], PRIMITIVES[1].center[2] + 0.35]], dtype=torch.float64)
    n = scene_normal(p)
    idx = torch.tensor([1])
    views = [torch.tensor([[0.358, 0.268, -0.894]]), torch.tensor([[-0.358, -0.268, -0.894]])]  # mirror vs. away
    colours = [shade(p, n, v.double(), idx) for v in views]
    assert (colours[0] - colours[1]).abs().max() > 0.3


def test_blender_writer_and_reader_round_trip(tiny_scene, tiny_scene_dir):
    assert detect_format(tiny_scene_dir) == "blender"
    scene = load_scene(tiny_scene_dir)
    assert scene.holdout == "file"
    assert scene.train_indices == list(range(16)) and scene.test_indices == [16, 17]
    assert torch.allclose(scene.images, tiny_scene.images, atol=1 / 255 + 1e-6)
    assert torch.allclose(scene.cameras.c2w, tiny_scene.cameras.c2w, atol=1e-6)
    assert torch.allclose(scene.cameras.fx, tiny_scene.cameras.fx, atol=1e-3)
    assert torch.equal(scene.aabb, tiny_scene.aabb)
    assert torch.allclose(scene.extras["depth"], tiny_scene.extras["depth"])


def test_lego_reader(shared_data):
    scene = load_scene(shared_data / "nerf_synthetic" / "lego", downscale=8)
    assert scene.images.shape == (100, 100, 100, 3)
    assert scene.holdout == "i%8==0"
    assert scene.test_indices == list(range(0, 100, 8)) and len(scene.train_indices) == 87
    # camera_angle_x = 0.6911112 -> focal 1111.11 px at 800, 138.89 at 100
    assert float(scene.cameras.fx[0]) == pytest.approx(138.889, abs=1e-2)
    assert torch.allclose(scene.images[:, 0, 0], torch.ones(100, 3)), "corners are composited on white"
    assert 0.05 < float(scene.alphas.mean()) < 0.5
    black = load_scene(shared_data / "nerf_synthetic" / "lego", downscale=8, background=(0.0, 0.0, 0.0))
    assert torch.allclose(black.images[:, 0, 0], torch.zeros(100, 3))


def test_llff_reader_uses_ndc(shared_data):
    scene = load_scene(shared_data / "llff" / "fern")
    assert scene.images.shape == (20, 378, 504, 3)
    assert scene.test_indices == [0, 8, 16]
    assert scene.cameras.ndc is not None
    # recentred: the mean camera sits at the origin looking down -z
    assert scene.cameras.centers.mean(0).abs().max() < 1e-4
    assert float(-scene.cameras.c2w[:, 2, 2].mean()) < -0.9
    rays = scene.cameras.image_rays(3)
    # NDC rays start on the near plane (z = -1) and reach z = +1 (infinity) at t = 1
    assert torch.allclose(rays.origins[:, 2], torch.full_like(rays.origins[:, 2], -1.0), atol=1e-4)
    assert torch.allclose((rays.origins + rays.directions)[:, 2], torch.ones_like(rays.origins[:, 2]), atol=1e-4)
    assert (rays.origins[:, :2].abs() < 1.5).all()


def _nerfstudio_copy(src_dir, dst, per_frame: bool):
    meta = json.loads((src_dir / "transforms_train.json").read_text())
    w = h = 32
    fl = 0.5 * w / np.tan(0.5 * meta["camera_angle_x"])
    shutil.copytree(src_dir / "train", dst / "images")
    frames = []
    for i, f in enumerate(meta["frames"]):
        fr = {"file_path": f"images/r_{i}.png", "transform_matrix": f["transform_matrix"]}
        if per_frame:
            fr.update({"fl_x": fl, "fl_y": fl, "cx": w / 2, "cy": h / 2, "w": w, "h": h})
        frames.append(fr)
    doc = {"frames": frames} if per_frame else {"fl_x": fl, "fl_y": fl, "cx": w / 2, "cy": h / 2, "w": w, "h": h,
                                                "camera_model": "OPENCV", "frames": frames}
    (dst / "transforms.json").write_text(json.dumps(doc))
    return fl


@pytest.mark.parametrize("per_frame", [False, True])
def test_nerfstudio_reader(tiny_scene_dir, tmp_path, per_frame):
    fl = _nerfstudio_copy(tiny_scene_dir, tmp_path, per_frame)
    assert detect_format(tmp_path) == "nerfstudio"
    scene = load_scene(tmp_path)
    assert scene.images.shape == (16, 32, 32, 3)
    assert torch.allclose(scene.cameras.fx, torch.full((16,), float(fl)))
    assert scene.test_indices == [0, 8]
    assert float(scene.cameras.centers.abs().max()) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------ bad input


def _copy_scene(tiny_scene_dir, tmp_path):
    dst = tmp_path / "scene"
    shutil.copytree(tiny_scene_dir, dst)
    return dst


def _edit(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_missing_transforms_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a known scene format"):
        load_scene(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such scene folder"):
        load_scene(tmp_path / "nope")


def test_malformed_json_is_named(tiny_scene_dir, tmp_path):
    d = _copy_scene(tiny_scene_dir, tmp_path)
    (d / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    with pytest.raises(DatasetError, match=r"transforms_train\.json: not valid JSON"):
        load_scene(d)


def test_missing_image_is_named(tiny_scene_dir, tmp_path):
    d = _copy_scene(tiny_scene_dir, tmp_path)
    (d / "train" / "r_3.png").unlink()
    with pytest.raises(DatasetError, match=r"r_3\.png does not exist"):
        load_scene(d)


def test_mixed_image_sizes_are_named(tiny_scene_dir, tmp_path):
    d = _copy_scene(tiny_scene_dir, tmp_path)
    iio.imwrite(d / "train" / "r_2.png", np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"mixed sizes.*r_2\.png is 20x20"):
        load_scene(d)


def test_non_finite_and_non_rigid_poses_are_named(tiny_scene_dir, tmp_path):
    d = _copy_scene(tiny_scene_dir, tmp_path)

    def nan_pose(meta):
        meta["frames"][4]["transform_matrix"][0][3] = float("nan")

    _edit(d / "transforms_train.json", nan_pose)
    with pytest.raises(DatasetError, match="frame 4 has non-finite values"):
        load_scene(d)

    d2 = _copy_scene(tiny_scene_dir, tmp_path / "b")

    def scaled_pose(meta):
        m = meta["frames"][2]["transform_matrix"]
        for r in range(3):
            m[r][0] *= 2.0

    _edit(d2 / "transforms_train.json", scaled_pose)
    with pytest.raises(DatasetError, match="frame 2 is not rigid"):
        load_scene(d2)


def test_missing_fields_are_named(tiny_scene_dir, tmp_path):
    d = _copy_scene(tiny_scene_dir, tmp_path)
    _edit(d / "transforms_train.json", lambda m: m.pop("camera_angle_x"))
    with pytest.raises(DatasetError, match="camera_angle_x"):
        load_scene(d)
    d2 = _copy_scene(tiny_scene_dir, tmp_path / "b")
    _edit(d2 / "transforms_train.json", lambda m: m["frames"][1].pop("transform_matrix"))
    with pytest.raises(DatasetError, match="frame 1 has no 'transform_matrix'"):
        load_scene(d2)


def test_llff_bad_pose_file(tmp_path):
    (tmp_path / "images_8").mkdir()
    np.save(tmp_path / "poses_bounds.npy", np.zeros((3, 12)))
    with pytest.raises(DatasetError, match=r"expected an \[N, 17\] array"):
        load_scene(tmp_path)
