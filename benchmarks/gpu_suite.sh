#!/usr/bin/env bash
# The GPU checks in one go, on a machine that starts bare (torch, triton and nvcc present):
#   benchmarks/gpu_suite.sh RESULTS_DIR
#
# 1. installs the wheels carried in .whl/ (gsplat and its needs, pytest, radistill's own
#    dependencies) into /tmp/site, and radistill from this checkout through PYTHONPATH;
# 2. builds gsplat's CUDA kernels once, for this card's architecture only and with every core
#    (MAX_JOBS), and records how long that took (gsplat_build.json);
# 3. runs the GPU parity tests (pytest -m gpu) natively;
# 4. runs the GPU benchmarks (rasteriser: PyTorch reference vs gsplat), writing their JSON and
#    Markdown into RESULTS_DIR.
# Prepare the wheels here first (see /work/.library/device/README.md) and carry them: .whl is
# git-ignored, so the device call must name it in `carry`, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl gsplat==1.5.3 ninja jaxtyping \
#       wadler-lindig rich markdown-it-py mdurl pygments pytest pluggy iniconfig packaging pytest-timeout
# (8.6 MB; the GPU image brings torch, numpy, triton and nvcc).
# Each stage has a time limit so that the whole suite ends within 8 minutes.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: benchmarks/gpu_suite.sh RESULTS_DIR}")
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { echo "wheel install failed: see $OUT/pip.log"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

# gsplat compiles on first use: one architecture, all cores.
export MAX_JOBS=$(nproc)
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
export TORCH_EXTENSIONS_DIR=/tmp/torch_extensions
start=$(date +%s.%N)
if timeout 300 python3 -c "from gsplat.cuda._backend import _C; assert _C is not None" > "$OUT/gsplat_build.log" 2>&1; then ok=true; else ok=false; fi
end=$(date +%s.%N)
python3 - "$start" "$end" "$ok" "$OUT" <<'EOF'
import json, os, sys
start, end, ok, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "true", sys.argv[4]
record = {"gsplat_built": ok, "build_seconds": round(end - start, 1), "max_jobs": int(os.environ["MAX_JOBS"]),
          "arch": os.environ["TORCH_CUDA_ARCH_LIST"]}
print(record)
json.dump(record, open(os.path.join(out, "gsplat_build.json"), "w"), indent=2)
EOF

status=0
[ "$ok" = true ] || { echo "gsplat did not build (see $OUT/gsplat_build.log): its tests and benchmark rows will be skipped"; status=1; }
# only the modules that hold GPU tests: the others import packages the bare machine may lack
gpu_tests=$(grep -rl "mark.gpu" tests --include="*.py")
timeout 120 python3 -m pytest -q -m gpu $gpu_tests -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.txt" || status=1
timeout 120 python3 benchmarks/gaussians.py --only raster --out "$OUT" 2>&1 | tee "$OUT/gaussians_bench.txt" || status=1
timeout 120 python3 benchmarks/mesh.py --only raster --out "$OUT" 2>&1 | tee "$OUT/mesh_bench.txt" || status=1
exit $status
