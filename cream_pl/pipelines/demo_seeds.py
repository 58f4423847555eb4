"""``make demo-seeds``: ``make demo`` over N training seeds, mean ± sd per row, seed-to-seed spread of every difference.

The dataset stays the same (the embedded benchmark, data seed 0); the classifier's and the
regressor's training seed is 0 .. N-1. Seed 0 is exactly ``make demo`` and reuses its work folder
(``outputs/demo``), so after ``make demo`` only seeds 1 .. N-1 train. Each seed resumes like the
demo itself. Writes ``<out>/metrics.json`` and ``<out>/metrics.md`` (atomic): per method and
metric the mean, sample sd and the per-seed values; per difference the mean, sd, per-seed values
and in how many seeds the paired bootstrap interval (over test images) excluded 0; and the wall
time (this invocation, and the summed stage times of every seed, i.e. a run from nothing).

Example:
    $ python -m cream_pl.pipelines.demo_seeds --seeds 3 --out results/embedded_seeds
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.options import OneLineArgumentParser, int_at_least
from cream_pl.pipelines.entry import pipeline_main, preflight

__all__ = ["aggregate", "main"]

ROWS = ("center_baseline", "cam", "cream", "cream_selected", "cream_reg", "cream_reg_psol")
METRICS = ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc")


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "values": [float(x) for x in v]}


def aggregate(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± sd per (row, metric), and per difference, over the seeds' ``metrics.json`` contents.

    Example:
        >>> a = {"cam": {"gt_known": 50.0}, "differences": {"x-y": {"gt_known": {"diff": 2.0, "ci95": [1.0, 3.0]}}}}
        >>> b = {"cam": {"gt_known": 54.0}, "differences": {"x-y": {"gt_known": {"diff": -2.0, "ci95": [-3.0, 1.0]}}}}
        >>> agg = aggregate({0: a, 1: b})
        >>> agg["methods"]["cam"]["gt_known"]["mean"], agg["differences"]["x-y"]["gt_known"]["seeds_interval_above_0"]
        (52.0, 1)
    """
    seeds = sorted(per_seed)
    methods: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        for metric in METRICS:
            vals = [per_seed[s].get(row, {}).get(metric) for s in seeds]
            if all(isinstance(v, (int, float)) for v in vals):
                methods.setdefault(row, {})[metric] = _mean_sd(vals)
    differences: dict[str, dict[str, Any]] = {}
    pairs = {p for s in seeds for p in per_seed[s].get("differences", {})}
    for pair in sorted(pairs):
        metrics = {m for s in seeds for m in per_seed[s].get("differences", {}).get(pair, {})}
        for metric in sorted(metrics):
            rs = [per_seed[s].get("differences", {}).get(pair, {}).get(metric) for s in seeds]
            if any(r is None for r in rs):
                continue
            differences.setdefault(pair, {})[metric] = {
                **_mean_sd([r["diff"] for r in rs]),
                "seeds_interval_above_0": sum(r["ci95"][0] > 0 for r in rs),
                "seeds_interval_below_0": sum(r["ci95"][1] < 0 for r in rs),
                "ci95_per_seed": [r["ci95"] for r in rs]}
    selected = [per_seed[s].get("selected", {}).get("cream") for s in seeds]
    chosen = [per_seed[s].get("cream_reg_selection", {}).get("chosen") for s in seeds]
    denoise = [{k: per_seed[s].get("cream_reg", {}).get(k) for k in ("train_gt_known", "train_pseudo_box_gt_known")}
               for s in seeds]  # is the regressor right more often than its own pseudo boxes, per seed
    return {"seeds": seeds, "methods": methods, "differences": differences, "cream_reg_chosen_per_seed": chosen,
            "cream_reg_train_per_seed": denoise,
            "selected_per_seed": [{k: c.get(k) for k in ("T", "kappa", "lambda", "feature_norm")} if c else None
                                  for c in selected]}


def _markdown(agg: Mapping[str, Any], names: Mapping[str, str]) -> str:
    def cell(d: Mapping[str, Any] | None) -> str:
        if d is None:
            return "—"
        return f"{d['mean']:.2f} ± {d['sd']:.2f}"

    n = len(agg["seeds"])
    lines = [f"# `make demo` over {n} training seeds", "",
             f"Produced by `make demo-seeds` (`python -m cream_pl.pipelines.demo_seeds --seeds {n}`): the same embedded "
             f"benchmark, training seeds {', '.join(map(str, agg['seeds']))}; mean ± sample sd over the seeds.", "",
             "| Method | " + " | ".join(METRICS) + " |", "| --- |" + " ---: |" * len(METRICS)]
    for row, per in agg["methods"].items():
        lines.append(f"| {names.get(row, row)} | " + " | ".join(cell(per.get(m)) for m in METRICS) + " |")
    lines += ["", "| difference | metric | mean ± sd over seeds | per seed | seeds whose 95 % CI excludes 0 (above / below) |",
              "| --- | --- | ---: | --- | --- |"]
    for pair, per in agg["differences"].items():
        a, b = pair.split("-", 1)
        for metric, d in per.items():
            lines.append(f"| {names.get(a, a)} − {names.get(b, b)} | {metric} | {d['mean']:+.2f} ± {d['sd']:.2f} | "
                         + ", ".join(f"{v:+.2f}" for v in d["values"])
                         + f" | {d['seeds_interval_above_0']} / {d['seeds_interval_below_0']} of {n} |")
    lines += ["", "CREAM's val-selected hyperparameters per seed: "
              + "; ".join(f"seed {s}: " + (", ".join(f"{k} {v}" for k, v in c.items()) if c else "—")
                          for s, c in zip(agg["seeds"], agg["selected_per_seed"])) + ".", ""]
    if any(agg.get("cream_reg_chosen_per_seed") or []):
        lines += ["CREAM_reg's design chosen on val per seed: " + "; ".join(
            f"seed {s}: {c}" for s, c in zip(agg["seeds"], agg["cream_reg_chosen_per_seed"])) + ".", ""]
    train = agg.get("cream_reg_train_per_seed") or []
    if train and all(t.get("train_gt_known") is not None for t in train):
        lines += ["On its own train images, CREAM_reg is right (IoU ≥ 0.5 to the true box) on " + "; ".join(
            f"seed {s}: {t['train_gt_known']:.1f} % (its pseudo boxes {t['train_pseudo_box_gt_known']:.1f} %)"
            for s, t in zip(agg["seeds"], train)) + ".", ""]
    w = agg.get("wall_time", {})
    if w:
        lines += [f"Wall time on this machine: {w['this_invocation_min']:.1f} min for this invocation; "
                  f"{w['all_stages_min']:.1f} min of stage time summed over the seeds (a run from nothing).", ""]
    return "\n".join(lines)


@pipeline_main("python -m cream_pl.pipelines.demo_seeds")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.demo_seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int_at_least(2), default=3,
                        help="number of training seeds (0 .. N-1; at least 2: a spread needs two runs)")
    parser.add_argument("--out", type=Path, default=Path("results/embedded_seeds"))
    parser.add_argument("--work-root", type=Path, default=Path("outputs/demo_seeds"),
                        help="work folders of seeds 1.. (seed 0 uses make demo's outputs/demo)")
    parser.add_argument("--seed0-work", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--fast", action="store_true", help="tiny data, 1 epoch, random init (smoke test)")
    args = parser.parse_args(argv)
    import json

    from cream_pl.core.io import atomic_write_text
    from cream_pl.pipelines.demo import run_demo
    from cream_pl.reporting.demo_report import DISPLAY_NAMES

    preflight(outputs=[(args.out, "--out"), (args.work_root, "--work-root"), (args.seed0_work, "--seed0-work")])
    start = time.time()
    per_seed: dict[int, dict[str, Any]] = {}
    stage_s = 0.0
    data = args.work_root / "data" if args.fast else Path("data/synth")  # a smoke run never touches make demo's data
    for seed in range(args.seeds):
        work = args.seed0_work if seed == 0 and not args.fast else args.work_root / f"seed{seed}"
        print(f"[demo-seeds] training seed {seed} ({work})", flush=True)
        res = run_demo(args.work_root / f"seed{seed}" / "results", work, data, fast=args.fast, train_seed=seed)
        per_seed[seed] = json.loads(json.dumps(res))
        stage_s += float(res["timing"]["total_s"])
    agg = aggregate(per_seed)
    agg["wall_time"] = {"this_invocation_min": (time.time() - start) / 60, "all_stages_min": stage_s / 60}
    agg["benchmark"] = per_seed[0].get("benchmark", {})
    atomic_write_text(args.out / "metrics.json", json.dumps(agg, indent=2) + "\n")
    atomic_write_text(args.out / "metrics.md", _markdown(agg, DISPLAY_NAMES))
    print(f"[demo-seeds] {args.seeds} seeds -> {args.out / 'metrics.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
