"""The columns of the tables every probe job writes (plain lists: declarations import them without pandas)."""

RUN_COLUMNS = ["run", "dataset", "model", "seed"]
ROBUSTNESS = RUN_COLUMNS + ["probe", "unit", "members", "checkpoint", "alpha", "sigma", "draw", "draw_seed", "bn_stats",
                            "split", "error", "loss", "agreement", "n", "worse", "better",
                            "increase", "error_low", "error_high", "increase_low", "increase_high"]
DISTANCES = RUN_COLUMNS + ["unit", "source", "checkpoint", "draw", "draw_seed", "n_params",
                           "l2", "linf", "l2_rel_init", "l2_per_sqrt_n", "linf_rel_init"]
INVENTORY = RUN_COLUMNS + ["unit", "index", "n_params", "params", "rule", "num_classes"]
