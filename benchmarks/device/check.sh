#!/usr/bin/env bash
# There, on the device machine (one call, about 8 minutes on an H100): the probes on CUDA
# against the CPU (tests/worker/probes/test_device.py), then the curvature and landscape
# benchmarks on CUDA. Needs .whl/ from fetch_wheels.sh carried along; writes each part's
# output to $OUT (or ./device-out) as well as to the terminal.
#
#   run(command="bash benchmarks/device/check.sh", carry=[".whl"], timeout_s=600)
#
# DEVICE=cpu bash benchmarks/device/check.sh dry-runs it on a machine without a GPU (with
# wheels for its Python: fetch_wheels.sh PYTHON VERSION).
set -uo pipefail
device=${DEVICE:-cuda}
cd "$(dirname "$0")/../.."
out=${OUT:-device-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/*.whl || exit 1
# The distribution maps server/, worker/, ... to dynascope.server, dynascope.worker, ...:
# the same through links, without building it.
mkdir -p /tmp/pkg/dynascope
for folder in server worker frontend migrations; do
    ln -sfn "$PWD/$folder" "/tmp/pkg/dynascope/$folder"
done
export PYTHONPATH="/tmp/pkg:/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
status=0
DYNASCOPE_TEST_DEVICE=$device python3 -m pytest -q -p no:cacheprovider \
    tests/worker/probes/test_device.py 2>&1 | tee "$out/test_device.txt" || status=1
timeout 300 python3 benchmarks/bench_curvature.py --quick --device "$device" 2>&1 \
    | tee "$out/bench_curvature.txt" || status=1
timeout 150 python3 benchmarks/bench_landscape.py --repeats 1 --device "$device" 2>&1 \
    | tee "$out/bench_landscape.txt" || status=1
exit $status
