#!/usr/bin/env bash
# One run on a lent GPU machine (CUDA torch there; nothing to install): the engine's tests on CUDA
# against the CPU reference, then the engine benchmark on the GPU. Results go to $OUT.
# Missing pure-Python dependencies travel as wheels in .whl/ (see the device notes in the README).
set -o pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_engine.py 2>&1 | tee "$OUT/engine_tests.txt"
python3 benchmarks/engine.py --device cuda --json "$OUT/engine_gpu.json" 2>&1 | tee "$OUT/engine_gpu.txt"
