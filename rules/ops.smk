# The fused C++/CUDA operators of csrc/, compiled once into one shared library. Probe jobs only
# load it (never compile), so parallel or cluster jobs cannot race on a build folder or wait on a
# stale lock; editing a kernel rebuilds it and reruns the probes that use it.


rule build_ops:
    input:
        sources=sorted(str(p) for p in Path(workflow.basedir, "csrc").glob("*") if p.suffix in (".h", ".cpp", ".cu")),
        build=Path(workflow.basedir, "layerprobe", "probing", "ops", "build.py"),
    output:
        OPS_LIBRARY,
    log:
        "logs/build_ops.log",
    benchmark:
        "results/benchmarks/build_ops.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/build_ops.py"
