import json
import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import pytest

from radistill.io.checkpoint import load_field

FAST = ["--set", "log2_table=12", "max_resolution=64", "samples_per_ray=64"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "radistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_commands_and_start_up_is_light():
    out = cli("--help")
    assert out.returncode == 0
    for cmd in ("train", "convert", "render", "eval", "demo"):
        assert cmd in out.stdout
    assert cli("train", "--help").returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import sys, radistill.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False", "--help must not import torch"


def test_train_eval_render_and_resume(tiny_scene_dir, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--data", tiny_scene_dir, "--kind", "hashgrid", "--steps", 20, "--batch-rays", 256,
            "--output", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert "trained hashgrid for 20 steps" in r.stdout and "held-out" in r.stdout
    assert (out / "hashgrid.safetensors").exists() and (out / "checkpoint.safetensors").exists()

    r = cli("train", "--data", tiny_scene_dir, "--kind", "hashgrid", "--steps", 30, "--batch-rays", 256,
            "--output", out, "--resume", *FAST)
    assert r.returncode == 0, r.stderr
    assert "for 30 steps" in r.stdout

    report = tmp_path / "eval.json"
    r = cli("eval", out / "hashgrid.safetensors", "--data", tiny_scene_dir, "--output", report)
    assert r.returncode == 0, r.stderr
    doc = json.loads(report.read_text())
    assert [im["index"] for im in doc["images"]] == [16, 17]
    assert doc["psnr"] == pytest.approx(sum(im["psnr"] for im in doc["images"]) / 2)
    assert 0 < doc["ssim"] <= 1

    gif = tmp_path / "turn.gif"
    r = cli("render", out / "hashgrid.safetensors", "--output", gif, "--frames", 6, "--resolution", 24)
    assert r.returncode == 0, r.stderr
    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (6, 24, 24)
    assert frames[0].std() > 0 and (frames[0] != frames[3]).any(), "the turntable moves"

    r = cli("render", out / "hashgrid.safetensors", "--data", tiny_scene_dir, "--output", tmp_path / "imgs")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["test_000.png", "test_001.png"]


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/nonexistent/scene"], "/nonexistent/scene: no such scene folder"),
    (["train", "--data", "builtin", "--kind", "voxels", "--steps", "1"], "unknown kind 'voxels'"),
    (["eval", "/nonexistent.safetensors", "--data", "builtin"], "no such checkpoint"),
    (["train", "--set", "nokey"], "--set expects key=value"),
    (["train", "--set", "levels=abc"], "levels must be int, got 'abc'"),
    (["train", "--data", "builtin", "--downscale", "0"], "downscale must be positive"),
    (["train", "--data", "{scene}/broken_json"], "transforms_train.json: not valid JSON"),
    (["train", "--data", "{scene}/missing_image"], "r_1.png does not exist"),
    (["eval", "{scene}/truncated.safetensors", "--data", "builtin"], "truncated.safetensors: not a readable safetensors"),
    (["render", "{scene}/foreign.safetensors"], "not a radistill checkpoint"),
    (["train", "--data", "builtin", "--device", "gpu0", "--steps", "1"], "unknown --device 'gpu0'"),
    (["train", "--data", "builtin", "--set", "backend=cuda", "--steps", "1"], "backend must be one of auto, torch, triton"),
])
def test_user_errors_exit_2_without_traceback(args, message, bad_inputs, capsys):
    from conftest import run_cli_here

    r = run_cli_here(capsys, *[a.format(scene=bad_inputs) for a in args])  # the command's main, in this process
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def bad_inputs(tiny_scene_dir, tmp_path_factory):
    """Broken copies of a real scene and of real checkpoints."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from radistill.fields import create_field
    from radistill.io.checkpoint import save_field

    root = tmp_path_factory.mktemp("bad")
    shutil.copytree(tiny_scene_dir, root / "broken_json")
    (root / "broken_json" / "transforms_train.json").write_text('{"frames": [')
    shutil.copytree(tiny_scene_dir, root / "missing_image")
    (root / "missing_image" / "train" / "r_1.png").unlink()
    ckpt = save_field(root / "truncated.safetensors", create_field("mlp", torch.tensor([[-1.0] * 3, [1.0] * 3])))
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    save_file({"w": torch.zeros(2)}, root / "foreign.safetensors")
    return root


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(tiny_scene_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "radistill.cli", "train", "--data", str(tiny_scene_dir),
                             "--steps", "100000", "--batch-rays", "128", "--checkpoint-every", "3", "--output", str(out),
                             *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.2)
    time.sleep(1.5)  # let it overwrite the checkpoint a few times, then kill it at an arbitrary moment
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    field = load_field(ckpt)
    assert field.kind == "hashgrid"
    from radistill.io.checkpoint import read_checkpoint

    done = int(read_checkpoint(ckpt)[1]["train_step"])
    assert done >= 3
    r = cli("train", "--data", tiny_scene_dir, "--steps", done + 4, "--batch-rays", 128, "--output", out, "--resume", *FAST)
    assert r.returncode == 0, r.stderr
    assert f"for {done + 4} steps" in r.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    r = cli("train", "--data", "builtin", "--device", "cuda", "--steps", "1")
    assert r.returncode == 2 and "no CUDA device is available here" in r.stderr and "Traceback" not in r.stderr
