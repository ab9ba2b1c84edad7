"""`radistill convert` end to end, and its answers to bad input (exit status 2, no traceback)."""

import json
import shutil
import subprocess
import sys

import pytest

from radistill.io.checkpoint import checkpoint_cameras, load_field, read_checkpoint

SMALL_MLP = ["--set", "width=32", "depth=2", "samples_per_ray=64"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "radistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_convert_writes_the_student_and_a_report(tiny_teacher, tiny_scene_dir, tmp_path):
    out = tmp_path / "conv"
    r = cli("convert", tiny_teacher, "--to", "mlp", "--output", out, "--stage-steps", 5, 5, 10, "--batch-rays", 256,
            "--images", tiny_scene_dir, "--checkpoint-every", 10, *SMALL_MLP)
    assert r.returncode == 0, r.stderr
    assert "converted hashgrid -> mlp in 20 steps" in r.stdout
    assert "held-out PSNR vs the photos" in r.stdout
    cams = checkpoint_cameras(tiny_teacher)
    assert f"PSNR vs the teacher on 8 random {cams.width}x{cams.height} views" in r.stdout  # the cameras' own size
    student = load_field(out / "mlp.safetensors")
    assert student.kind == "mlp" and student.config.width == 32
    _, meta = read_checkpoint(out / "mlp.safetensors")
    assert meta["converted_from"] == "hashgrid" and "cameras" in meta, "the student can teach in turn"
    report = json.loads((out / "report.json").read_text())
    assert report["from"] == "hashgrid" and report["to"] == "mlp" and report["steps"] == 20
    assert 5 < report["psnr_vs_teacher"] < 100 and 5 < report["psnr_heldout"] < 100

    # resuming a finished conversion with more stage-3 steps continues from step 20
    r = cli("convert", tiny_teacher, "--to", "mlp", "--output", out, "--stage-steps", 5, 5, 15, "--batch-rays", 256,
            "--resume", *SMALL_MLP)
    assert r.returncode == 0, r.stderr
    assert "in 25 steps" in r.stdout

    # the converted student converts onwards (its checkpoint carries the pose distribution)
    r = cli("convert", out / "mlp.safetensors", "--to", "tensorf-vm", "--output", tmp_path / "onwards",
            "--stage-steps", 2, 2, 2, "--report-views", 0, "--set", "final_resolution=32", "samples_per_ray=64")
    assert r.returncode == 0, r.stderr
    assert "converted mlp -> tensorf-vm" in r.stdout


def _error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stderr


def test_convert_bad_input_is_a_clear_error(tiny_teacher, tiny_scene_dir, tmp_path, capsys):
    """Each bad input gives exit status 2 and a clear message (in this process, but the first,
    which runs the installed command)."""
    from conftest import run_cli_here

    def here(*args):
        return run_cli_here(capsys, *args)

    assert "already a 'hashgrid' field" in _error(cli("convert", tiny_teacher, "--to", "hashgrid"))
    assert "unknown kind 'gaussianz'" in _error(here("convert", tiny_teacher, "--to", "gaussianz"))
    assert "no such checkpoint" in _error(here("convert", tmp_path / "missing.safetensors", "--to", "mlp"))

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_teacher.read_bytes()[:5000])
    assert "not a readable safetensors file" in _error(here("convert", truncated, "--to", "mlp"))

    # a well-formed file whose kind radistill does not know
    from safetensors.torch import load_file, save_file

    tensors = load_file(tiny_teacher)
    _, meta = read_checkpoint(tiny_teacher)
    foreign = tmp_path / "foreign.safetensors"
    save_file(tensors, foreign, metadata={**meta, "kind": "nerfacto"})
    assert "unknown kind 'nerfacto'" in _error(here("convert", foreign, "--to", "mlp"))

    # photos of another frame than the teacher's
    other = tmp_path / "other_scene"
    shutil.copytree(tiny_scene_dir, other)
    for split in ("train", "test"):
        path = other / f"transforms_{split}.json"
        doc = json.loads(path.read_text())
        doc["aabb"] = [[-4, -4, -4], [4, 4, 4]]
        path.write_text(json.dumps(doc))
    err = _error(here("convert", tiny_teacher, "--to", "mlp", "--images", other))
    assert "does not match the aabb" in err and "same capture" in err

    assert "stage_steps" in _error(here("convert", tiny_teacher, "--to", "mlp", "--stage-steps", 0, 0, 0))
    assert "unknown --device 'bogus'" in _error(here("convert", tiny_teacher, "--to", "mlp", "--device", "bogus"))
    assert "view_pool must be at least 1, got 0" in _error(here("convert", tiny_teacher, "--to", "mlp", "--view-pool", 0))
    assert "view_size must be at least 8 pixels" in _error(here("convert", tiny_teacher, "--to", "mlp", "--view-size", 2))


@pytest.mark.parametrize("command", ["convert"])
def test_help_of_convert(command):
    r = cli(command, "--help")
    assert r.returncode == 0
    for flag in ("--to", "--stage-steps", "--images", "--active-poses", "--resume", "--max-seconds", "--device",
                 "--view-pool", "--view-size"):
        assert flag in r.stdout
