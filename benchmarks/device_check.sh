#!/usr/bin/env bash
# One run on a lent GPU machine (CUDA torch and nvcc there; nothing to install): build the fused
# operators with their CUDA kernels, check every operator on the GPU against the CPU reference
# (tests/test_ops.py has the CPU side; here the same inputs go through CUDA), then the engine
# benchmark on the GPU with ops on (ops_s) and off (engine_s) and the loop. Under 8 minutes.
# Results go to $OUT. Missing pure-Python dependencies travel as wheels in .whl/.
set -o pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 240 python3 -c "from layerprobe import ops; print(ops.build('$OUT/layerprobe_ops.so', cuda=True))" \
    2>&1 | tail -5 | tee "$OUT/build.txt" || exit 1
timeout 120 python3 - "$OUT/layerprobe_ops.so" <<'PY' 2>&1 | tee "$OUT/ops_gpu.txt"
import sys, torch
from layerprobe import ops
ops.load(sys.argv[1])
assert ops.has_device("cuda"), "built without CUDA kernels"
g = torch.Generator().manual_seed(0)
fails = 0
def check(name, gpu, cpu, exact=()):
    global fails
    gpu = gpu if isinstance(gpu, tuple) else (gpu,)
    cpu = cpu if isinstance(cpu, tuple) else (cpu,)
    for i, (a, b) in enumerate(zip(gpu, cpu)):
        a = a.cpu()
        ok = torch.equal(a, b) if i in exact else torch.allclose(a, b, rtol=1e-5, atol=1e-5)
        fails += not ok
        print(f"{name}[{i}]: {'ok' if ok else 'DIFFERS'} (max |diff| {(a.double() - b.double()).abs().max():.3g})")
for dt in (torch.float32, torch.float64):
    for v, n, c, f in [(3, 37, 2, 17), (5, 3001, 1000, 33), (2, 100_000, 10, 8)]:
        h, w, b = torch.randn(v, n, f, generator=g, dtype=dt), torch.randn(c, f, generator=g, dtype=dt), torch.randn(c, generator=g, dtype=dt)
        y, r = torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (n,), generator=g)
        check(f"head_eval {dt} {v}x{n}x{c}", ops.head_eval(h.cuda(), w.cuda(), b.cuda(), y.cuda(), r.cuda()),
              ops.head_eval_reference(h, w, b, y, r), exact=(0, 2))
    x, w0, w1 = (torch.randn(s, generator=g, dtype=dt) for s in [(77, 33), (65, 33), (65, 33)])
    a = torch.rand(9, dtype=dt)
    check(f"interp_unit {dt}", ops.interp_unit(x.cuda(), w0.cuda(), None, w1.cuda(), None, a.cuda(), "relu"),
          ops.interp_unit_reference(x, w0, None, w1, None, a, "relu"))
    s, seeds = torch.rand(5, dtype=dt), ops.seeds_for(3, 5)
    check(f"noisy_unit {dt}", ops.noisy_unit(x.cuda(), w0.cuda(), None, s.cuda(), seeds.cuda(), 2),
          ops.noisy_unit_reference(x, w0, None, s, seeds, 2))
    eye = torch.eye(33, dtype=dt)
    E = ops.noisy_unit(eye.cuda(), torch.zeros(65, 33, dtype=dt).cuda(), None, torch.ones(1, dtype=dt).cuda(), torch.tensor([7]), 1)[0].T
    check(f"noise CUDA = CPU reference {dt}", E, ops.normal_noise(7, 1, 65, 33, dt), exact=(0,) if dt == torch.float32 else ())
print("ALL OPS OK" if not fails else f"{fails} CHECKS FAILED")
PY
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_ops.py -k "cu_file or opcheck" 2>&1 | tail -3 | tee "$OUT/ops_tests.txt"
timeout 300 python3 benchmarks/engine.py --device cuda --ops-library "$OUT/layerprobe_ops.so" --json "$OUT/engine_gpu.json" \
    2>&1 | tee "$OUT/engine_gpu.txt"
