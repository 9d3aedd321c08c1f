#!/usr/bin/env bash
# Builds the whole fused-operator extension of csrc/ (the CPU operators, the CUDA registration of
# ops_cuda.cpp and the kernels of kernels.cu) with a CUDA build of torch on a machine without a GPU,
# using the project's own build function (layerprobe.probing.ops.build.build_ops, which finds the
# CUDA toolkit and the NVIDIA wheels' headers itself), then loads the library in that torch and
# reports, per operator, whether a CUDA kernel is registered. Needs nvcc (any CUDA toolkit whose
# major version is torch's), a C++ compiler, and a package index (or local wheels) for the first run.
#
#   bash benchmarks/cuda_build_check.sh [VENV]
#
# VENV (the first argument, else $LAYERPROBE_CUDA_VENV, else venv-cuda next to the checkout, i.e.
# /work/venv-cuda for /work/wt-cuda): a virtual environment with the CUDA torch, kept OUTSIDE the
# checkout (about 5.5 GB with its NVIDIA wheels; never committed, never carried to a device). It is
# created when missing, and torch ($LAYERPROBE_CUDA_TORCH, default torch==2.14.1, a +cu130 build)
# and the project's test dependencies (pip install -e ".[test]"; the torch requirement is a range, so
# the CUDA torch stays) are installed into it when they are not there; later runs reuse it. The
# library of this checkout is the one imported (PYTHONPATH), whichever checkout the venv was made
# from. The kernels are compiled for sm_90 (the H200) and every architecture torch was built for,
# unless TORCH_CUDA_ARCH_LIST is set. The library lands in $OUT (default benchmarks/out/cuda-build,
# ignored by git). Each step has a timeout; the last line is always "CUDA kernels registered: ..."
# with the names registered ("(none)" if the build failed), and the exit status is 0 only when all
# three are. Not run by CI (too heavy).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-${LAYERPROBE_CUDA_VENV:-$(dirname "$REPO")/venv-cuda}}
TORCH_REQ=${LAYERPROBE_CUDA_TORCH:-torch==2.14.1}
OUT=${OUT:-$REPO/benchmarks/out/cuda-build}
PY="$VENV/bin/python"
LIBRARY="$OUT/layerprobe_ops.so"
OPS="head_eval interp_unit noisy_unit"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO"

case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/" in
    "$REPO"/*) echo "FATAL: the environment $VENV lies inside the checkout $REPO; give a path outside it" >&2
               echo "CUDA kernels registered: (none)"; exit 2 ;;
esac
mkdir -p "$OUT"

finish() {  # the last line, always
    echo "CUDA kernels registered: ${1:-(none)}"
    [ "${1:-}" = "$OPS" ]
    exit $?
}

# step NAME TIMEOUT COMMAND...: a step with a time limit; its output to the terminal.
step() {
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name (timeout ${limit}s) ==="
    start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    case $rc in
        0) echo "--- $name: ok, $((SECONDS - start)) s" ;;
        124|137) echo "--- $name: TIMEOUT after ${limit} s" >&2 ;;
        *) echo "--- $name: FAILED (exit $rc), $((SECONDS - start)) s" >&2 ;;
    esac
    return $rc
}

# --- 1. the environment (created or reused) ----------------------------------------------------
if [ ! -x "$PY" ]; then
    step venv 120 python3 -m venv "$VENV" || finish
fi
if ! "$PY" -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
    # A CUDA torch with its NVIDIA wheels: minutes from a local mirror, longer from the internet.
    step torch 1800 "$PY" -m pip install -q "$TORCH_REQ" || finish
fi
if ! "$PY" -c "import jsonschema, yaml, pandas, matplotlib, sklearn, PIL, tqdm, snakemake, pytest, ninja" 2>/dev/null; then
    step deps 900 "$PY" -m pip install -q -e "$REPO[test]" || finish
fi
"$PY" -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null || {
    echo "FATAL: torch in $VENV is not a CUDA build ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1))" >&2
    finish
}
export PATH="$VENV/bin:$PATH"  # ninja from its wheel

# --- 2. what the build will use (found by build.find_cuda, nothing set by hand) ---------------
step toolkit 120 "$PY" - <<'PY' || finish
import os
import subprocess
import sys

import layerprobe
import torch
from torch.utils import cpp_extension

from layerprobe.probing.ops import build

print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| GPUs visible:", torch.cuda.device_count())
print("layerprobe from", os.path.dirname(layerprobe.__file__))
home, wheels, missing = build.find_cuda()
print("torch's own guess of CUDA_HOME:", cpp_extension.CUDA_HOME)
print("CUDA toolkit found:", home)
if home is not None:
    version = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True).stdout
    print("nvcc:", version.strip().splitlines()[-2] if version.strip() else "?")
for folder in wheels:
    print("NVIDIA wheel headers:", folder)
if missing:
    sys.exit(f"the CUDA kernels cannot be built here: {missing}")
PY
ARCHS=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "
from layerprobe.probing.ops.build import arch_list
archs = arch_list().split(';')
print(';'.join(archs if '9.0' in archs else ['9.0', *archs]))" 2>/dev/null)}
echo "TORCH_CUDA_ARCH_LIST=$ARCHS (torch's own architectures and sm_90)"

# --- 3. the build: registration and kernels, with the project's build function ----------------
rm -f "$LIBRARY"
BUILD_START=$SECONDS
TORCH_CUDA_ARCH_LIST="$ARCHS" step build 1500 "$PY" -c "
import sys
from layerprobe.probing.ops import build
print('sources:', ', '.join(str(s.name) for s in build.sources(cuda=True)))
build.build_ops(sys.argv[1], cuda=True, verbose=True)
" "$LIBRARY"
BUILD_RC=$?
BUILD_S=$((SECONDS - BUILD_START))
[ "$BUILD_RC" = 0 ] && [ -f "$LIBRARY" ] || { echo "build failed after $BUILD_S s" >&2; finish; }
echo "build time: $BUILD_S s for architectures $ARCHS ($(du -h "$LIBRARY" | cut -f1) library)"

# --- 4. load it in a fresh process of that torch (no GPU) and ask the dispatcher ---------------
REGISTERED=$(timeout --kill-after=10 120 "$PY" - "$LIBRARY" <<'PY' 2>"$OUT/load.txt"
import sys

import torch

from layerprobe.probing import ops

ops.load(sys.argv[1])
names = []
for op in ops.OPS:
    cpu = torch._C._dispatch_has_kernel_for_dispatch_key(f"layerprobe::{op}", "CPU")
    cuda = torch._C._dispatch_has_kernel_for_dispatch_key(f"layerprobe::{op}", "CUDA")
    print(f"layerprobe::{op}: CPU kernel {'yes' if cpu else 'NO'}, CUDA kernel {'yes' if cuda else 'NO'}", file=sys.stderr)
    if cuda:
        names.append(op)
print(" ".join(names))
PY
)
LOAD_RC=$?
grep -v "No CUDA runtime is found" "$OUT/load.txt" >&2
[ "$LOAD_RC" = 0 ] || echo "loading $LIBRARY failed (exit $LOAD_RC); see $OUT/load.txt" >&2
finish "$REGISTERED"
