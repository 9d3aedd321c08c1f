# Helpers shared by the rules.


def figures(name, enabled=True, **wildcards):
    """The PNG and PDF of figure `name` (a pattern) for every run; none when its probe is disabled."""
    if not enabled:
        return []
    return expand(f"results/figures/{{run}}/{name}.{{ext}}", run=RUNS, ext=["png", "pdf"], **wildcards)


def gpus(rule, device):
    """GPUs a job of `rule` asks for (config `resources`); a profile's set-resources overrides it."""
    return layerprobe.config.job_gpus(config["resources"][rule]["gpu"], device)
