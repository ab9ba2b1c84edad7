#!/usr/bin/env bash
# The GPU checks in one go, on a machine that starts bare (torch, triton and nvcc present):
#   benchmarks/gpu_suite.sh RESULTS_DIR
#
# 1. installs the wheels carried in .whl/ (gsplat and its needs) into /tmp/site, and radistill
#    from this checkout through PYTHONPATH; real data comes from RADISTILL_DATA, or from a copy
#    carried in .gpu_data/ (the lego scene), or from ../shared/data;
# 2. starts building gsplat's CUDA kernels in the background, for this card's architecture only
#    and with most cores (MAX_JOBS), and records how long that took (gsplat_build.json);
# 3. runs the Triton kernels' parity tests natively (tests/kernels) and the kernel benchmarks
#    (benchmarks/kernels.py: each op against its PyTorch reference);
# 4. once gsplat is built: end-to-end hashgrid training on lego at 800x800 for 60 s with the
#    profile of a training step, the other GPU tests (pytest -m gpu: gsplat and nvdiffrast
#    parity where installed, conversions with --device cuda) and the rasteriser benchmarks.
# Results (JSON and Markdown in the benchmarks' record format, plus one log per stage) go to
# RESULTS_DIR; stages.txt lists each stage's exit status and seconds. Each stage has a time
# limit; the whole suite takes about 6 minutes on an H100 and is meant to end within 8.
# Prepare the wheels here first (see /work/.library/device/README.md) and carry them: .whl is
# git-ignored, so the device call must name it in `carry`, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl gsplat==1.5.3 ninja jaxtyping \
#       wadler-lindig rich markdown-it-py mdurl pygments pytest pluggy iniconfig packaging pytest-timeout
# (8.6 MB; the GPU image brings torch, numpy, triton, scipy, imageio, safetensors and nvcc).
set -uo pipefail
OUT=$(realpath -m "${1:?usage: benchmarks/gpu_suite.sh RESULTS_DIR}")
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
suite_start=$(date +%s)
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { echo "wheel install failed: see $OUT/pip.log"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
if [ -z "${RADISTILL_DATA:-}" ] && [ -d .gpu_data ]; then export RADISTILL_DATA=$PWD/.gpu_data; fi
python3 -c "import torch, triton; print(torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" \
  | tee "$OUT/device.txt"

status=0
stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to NAME.txt, note the result
  local name=$1 limit=$2
  shift 2
  local start
  start=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.txt"
  echo "$name rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/stages.txt"
  [ $rc = 0 ] || status=1
}

# gsplat compiles on first use: one architecture, most cores (the kernel benchmarks run meanwhile)
export MAX_JOBS=$(( $(nproc) > 4 ? $(nproc) - 4 : 1 ))
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
export TORCH_EXTENSIONS_DIR=/tmp/torch_extensions
(
  start=$(date +%s.%N)
  if timeout 300 python3 -c "from gsplat.cuda._backend import _C; assert _C is not None" > "$OUT/gsplat_build.log" 2>&1
  then ok=true; else ok=false; fi
  end=$(date +%s.%N)
  python3 - "$start" "$end" "$ok" "$OUT" <<'EOF'
import json, os, sys
start, end, ok, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "true", sys.argv[4]
record = {"gsplat_built": ok, "build_seconds": round(end - start, 1), "max_jobs": int(os.environ["MAX_JOBS"]),
          "arch": os.environ["TORCH_CUDA_ARCH_LIST"],
          "note": "built while the Triton kernel tests and benchmarks ran on the same machine"}
print(record)
json.dump(record, open(os.path.join(out, "gsplat_build.json"), "w"), indent=2)
EOF
) > "$OUT/gsplat_build.txt" 2>&1 &
build=$!

stage kernel_tests 150 python3 -m pytest -q tests/kernels -p no:cacheprovider
stage kernel_ops 150 python3 benchmarks/kernels.py --only hash composite march --out "$OUT"
wait $build
cat "$OUT/gsplat_build.txt"
grep -q '"gsplat_built": true' "$OUT/gsplat_build.json" 2>/dev/null \
  || { echo "gsplat did not build (see $OUT/gsplat_build.log): its tests and benchmark rows fail or skip"; status=1; }
stage kernel_train 240 python3 benchmarks/kernels.py --only train profile --budget 60 --out "$OUT"
# only the modules that hold GPU tests: the others import packages the bare machine may lack
gpu_tests=$(grep -rl "mark.gpu" tests --include="*.py" | grep -v "^tests/kernels/")
stage gpu_tests 180 python3 -m pytest -q -m gpu $gpu_tests -p no:cacheprovider
stage gaussians_bench 90 python3 benchmarks/gaussians.py --only raster --out "$OUT"
stage mesh_bench 60 python3 benchmarks/mesh.py --only raster --out "$OUT"
echo "suite seconds=$(( $(date +%s) - suite_start )) status=$status" | tee -a "$OUT/stages.txt"
exit $status
