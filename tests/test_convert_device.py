"""Where a conversion runs: ``--device`` / ``ConvertConfig.device``."""

from dataclasses import replace

import pytest
import torch

from radistill.conversion import ConvertConfig, convert
from radistill.distill.objectives import DistillConfig
from radistill.errors import ConfigError

STUDENTS = {"mlp": {"width": 32, "depth": 2, "samples_per_ray": 64}, "gaussians": {"initial_gaussians": 2000}}


def test_a_device_that_is_not_there_is_a_clear_error_before_any_work(tiny_teacher, tmp_path):
    config = ConvertConfig(distill=DistillConfig(stage_steps=(1, 1, 1)), progress=False, device="bogus")
    with pytest.raises(ConfigError, match="unknown --device 'bogus'"):
        convert(tiny_teacher, "mlp", config, STUDENTS["mlp"], output=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            convert(tiny_teacher, "mlp", replace(config, device="cuda"), STUDENTS["mlp"], output=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing is written before the device is known"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", list(STUDENTS))
def test_a_conversion_on_cuda_learns_as_well_as_on_the_cpu_and_resumes(kind, tiny_teacher, tmp_path):
    config = ConvertConfig(distill=DistillConfig(stage_steps=(10, 20, 60)), checkpoint_every=30, progress=False,
                           report_views=4, device="cuda")
    on_gpu = convert(tiny_teacher, kind, config, STUDENTS[kind], output=tmp_path / "cuda")
    assert all(p.device.type == "cuda" for p in on_gpu.student.parameters())
    on_cpu = convert(tiny_teacher, kind, replace(config, device="cpu"), STUDENTS[kind], output=tmp_path / "cpu")
    gpu_db, cpu_db = on_gpu.report["psnr_vs_teacher"], on_cpu.report["psnr_vs_teacher"]
    assert abs(gpu_db - cpu_db) < 3.0, (gpu_db, cpu_db)  # the same recipe: the same quality, not the same bits

    longer = replace(config, distill=DistillConfig(stage_steps=(10, 20, 80)))
    resumed = convert(tiny_teacher, kind, longer, STUDENTS[kind], output=tmp_path / "cuda", resume=True)
    assert resumed.train.steps == 110 and resumed.report["psnr_vs_teacher"] > 5
