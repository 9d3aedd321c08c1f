# Figures, drawn from the aggregated tables alone; the PNGs go into the report.


rule robustness_figure:
    input:
        "results/tables/robustness.csv",
    output:
        png=report(
            "results/figures/{run}/robustness_{split}.png",
            caption="../report/robustness.rst",
            category="Robustness",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "{split} error"},
        ),
        pdf="results/figures/{run}/robustness_{split}.pdf",
    log:
        "logs/figures/{run}/robustness_{split}.log",
    benchmark:
        "results/benchmarks/figures/{run}/robustness_{split}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/robustness_figure.py"


rule distance_figure:
    input:
        "results/tables/distances.csv",
    output:
        png=report(
            "results/figures/{run}/distance_{measure}.png",
            caption="../report/distances.rst",
            category="Distances",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "{measure}"},
        ),
        pdf="results/figures/{run}/distance_{measure}.pdf",
    log:
        "logs/figures/{run}/distance_{measure}.log",
    benchmark:
        "results/benchmarks/figures/{run}/distance_{measure}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/distance_figure.py"


rule interpolation_figure:
    input:
        "results/tables/robustness.csv",
    output:
        png=report(
            "results/figures/{run}/interpolation_{split}.png",
            caption="../report/interpolation.rst",
            category="Interpolation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "{split} error"},
        ),
        pdf="results/figures/{run}/interpolation_{split}.pdf",
    log:
        "logs/figures/{run}/interpolation_{split}.log",
    benchmark:
        "results/benchmarks/figures/{run}/interpolation_{split}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/interpolation_figure.py"


rule criticality_figure:
    input:
        "results/tables/criticality.csv",
    output:
        png=report(
            "results/figures/{run}/criticality.png",
            caption="../report/criticality.rst",
            category="Criticality",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "criticality"},
        ),
        pdf="results/figures/{run}/criticality.pdf",
    log:
        "logs/figures/{run}/criticality.log",
    benchmark:
        "results/benchmarks/figures/{run}/criticality.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/criticality_figure.py"


rule joint_figure:
    input:
        "results/tables/robustness.csv",
    output:
        png=report(
            "results/figures/{run}/joint_{split}.png",
            caption="../report/joint.rst",
            category="Joint",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "{split} error"},
        ),
        pdf="results/figures/{run}/joint_{split}.pdf",
    log:
        "logs/figures/{run}/joint_{split}.log",
    benchmark:
        "results/benchmarks/figures/{run}/joint_{split}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/joint_figure.py"
