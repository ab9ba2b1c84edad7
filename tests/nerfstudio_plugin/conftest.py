"""The real nerfstudio, run on a small real scene.

These tests need ``pip install "radistill[nerfstudio]"``; without nerfstudio they are skipped,
unless ``RADISTILL_REQUIRE_NERFSTUDIO=1`` (set by CI), where a missing nerfstudio is a failure.

Offline LPIPS: nerfstudio's models build torchmetrics' LPIPS metric at start-up, whose AlexNet
backbone torchvision downloads on first use. No network is reachable here, so the tests give
torchvision a cached AlexNet file in a private ``TORCH_HOME`` holding *randomly initialised*
weights: the models build and train normally (LPIPS is only an evaluation metric and plays no
part in training), but LPIPS values these runs log are meaningless. Nothing else is replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
sys.path.insert(0, str(SUPPORT))

import torchvision_cpu  # noqa: E402

torchvision_cpu.install()

if os.environ.get("RADISTILL_REQUIRE_NERFSTUDIO") != "1":
    pytest.importorskip("nerfstudio", reason="nerfstudio is not installed (pip install 'radistill[nerfstudio]')")

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # the name torchvision's AlexNet_Weights.IMAGENET1K_V1 caches under


@pytest.fixture(scope="session")
def ns_env(tmp_path_factory) -> dict[str, str]:
    """Environment for nerfstudio commands: the offline AlexNet and the torchvision shim."""
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), home / "hub" / "checkpoints" / ALEXNET_FILE)
    env = dict(os.environ, TORCH_HOME=str(home), PYTHONPATH=os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
    os.environ["TORCH_HOME"] = str(home)  # for the models these tests build in-process
    return env


@pytest.fixture(scope="session")
def small_lego(shared_data, tmp_path_factory) -> Path:
    """lego at 100x100, 24 of its views, written in NeRF Blender format (every 8th view held out)."""
    from PIL import Image

    src = shared_data / "nerf_synthetic" / "lego"
    dst = tmp_path_factory.mktemp("lego_small")
    meta = json.loads((src / "transforms_train.json").read_text())
    (dst / "train").mkdir()
    splits: dict[str, list] = {"train": [], "val": []}
    for i, frame in enumerate(meta["frames"][:24]):
        name = Path(frame["file_path"]).name
        Image.open(src / (frame["file_path"] + ".png")).resize((100, 100), Image.LANCZOS).save(dst / "train" / f"{name}.png")
        splits["val" if i % 8 == 0 else "train"].append({**frame, "file_path": f"./train/{name}"})
    for split, frames in (("train", splits["train"]), ("val", splits["val"]), ("test", splits["val"])):
        (dst / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": meta["camera_angle_x"], "frames": frames}))
    return dst


def ns(command: str, *args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a nerfstudio command line; fail with its output when it fails."""
    exe = Path(sys.executable).parent / command
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{command} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


CPU = ["--machine.device-type", "cpu", "--mixed-precision", "False", "--vis", "tensorboard",
       "--steps-per-eval-batch", "100000", "--steps-per-eval-image", "100000", "--steps-per-eval-all-images", "100000"]


@pytest.fixture(scope="session")
def nerfacto_run(ns_env, small_lego, tmp_path_factory) -> Path:
    """A real nerfacto run (PyTorch hash grid) on small lego, trained on the CPU for a few minutes:
    1024 rays a step and fewer samples than the defaults (4096 rays take ~10 s a step here)."""
    out = tmp_path_factory.mktemp("ns_outputs")
    ns("ns-train", "nerfacto", *CPU, "--pipeline.model.implementation", "torch",
       "--max-num-iterations", "200", "--steps-per-save", "200",
       "--pipeline.datamanager.train-num-rays-per-batch", "1024", "--pipeline.datamanager.eval-num-rays-per-batch", "512",
       "--pipeline.model.num-nerf-samples-per-ray", "24", "--pipeline.model.num-proposal-samples-per-ray", "64", "32",
       "--pipeline.model.background-color", "white",
       "--output-dir", str(out), "--experiment-name", "lego", "--timestamp", "run",
       "blender-data", "--data", str(small_lego), env=ns_env)
    return out / "lego" / "nerfacto" / "run"


def pytest_terminal_summary(terminalreporter) -> None:
    """Show the figures these tests measure (``record_property``) at the end of every run."""
    lines = [f"{report.nodeid.split('::')[-1]}: {name} = {value}"
             for report in terminalreporter.stats.get("passed", []) for name, value in report.user_properties]
    if lines:
        terminalreporter.section("measured with the real nerfstudio")
        for line in lines:
            terminalreporter.line(line)
