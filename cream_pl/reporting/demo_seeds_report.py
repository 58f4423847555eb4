"""``make demo-seeds``'s report: ``make demo`` over N training seeds, mean ± sd per row, the spread of every difference.

Per method and metric the mean, sample sd and per-seed values; per difference the mean, sd, per-seed
values and in how many seeds the paired bootstrap interval (over test images) excluded 0; CREAM's and
CREAM_reg's val choices per seed; the wall time (this invocation, and the summed stage times of every
seed, i.e. a run from nothing). Written to ``<out>/metrics.json`` and ``<out>/metrics.md`` (atomic); each seed's
own ``make demo`` results (``metrics.json``, ``metrics.md``, the T / λ ablation tables) to
``<work>/seed<N>/results/``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "report"]

ROWS = ("center_baseline", "cam", "cream", "cream_selected", "cream_reg", "cream_reg_psol")


def _markdown(command: str, agg: Mapping[str, Any], names: Mapping[str, str]) -> str:
    from cream_pl.reporting.experiment_report import seeds_markdown_lines

    n = len(agg["seeds"])
    lines = [f"# `make demo` over {n} training seeds", "",
             f"Produced by `make demo-seeds` (`{command}`): the same embedded "
             f"benchmark, training seeds {', '.join(map(str, agg['seeds']))}; mean ± sample sd over the seeds.", "",
             *seeds_markdown_lines(agg, names),
             "", "CREAM's val-selected hyperparameters per seed: "
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
    w = agg["wall_time"]
    lines += [f"Wall time on this machine: {w['this_invocation_min']:.1f} min for this invocation; "
              f"{w['all_stages_min']:.1f} min of stage time summed over the seeds (a run from nothing).", ""]
    return "\n".join(lines)


def report(exp: Any, result: Any, out: Path) -> dict[str, Any]:
    from cream_pl.reporting.demo_report import DISPLAY_NAMES, demo_payload, write_results
    from cream_pl.reporting.experiment_report import aggregate_seeds
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    if len(result.rows) < 2:
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{exp.source}: the seeds report needs at least two seeds (a spread), got {sorted(result.rows)}")
    per_seed = {s: demo_payload(exp, result, s) for s in sorted(result.rows)}
    for s, payload in per_seed.items():  # each seed's own make-demo results, beside its run (seed 0's: seed0/)
        write_results(copy.deepcopy(payload), result.work / f"seed{s}" / "results", data=result.data,
                      seed=exp.dataset.seed, num_classes=payload["benchmark"]["num_classes"], fast=result.fast,
                      command=result.command, produced_by=f"`make demo-seeds`, training seed {s}", figures=False)
    agg = aggregate_seeds(per_seed, ROWS)
    seeds = agg["seeds"]
    agg["cream_reg_chosen_per_seed"] = [per_seed[s].get("cream_reg_selection", {}).get("chosen") for s in seeds]
    agg["cream_reg_train_per_seed"] = [{k: per_seed[s].get("cream_reg", {}).get(k)  # right more often than its boxes?
                                        for k in ("train_gt_known", "train_pseudo_box_gt_known")} for s in seeds]
    selected = [per_seed[s].get("selected", {}).get("cream") for s in seeds]
    agg["selected_per_seed"] = [{k: c.get(k) for k in ("T", "kappa", "lambda", "feature_norm")} if c else None
                                for c in selected]
    agg["wall_time"] = {"this_invocation_min": result.timing["this_invocation_s"] / 60,
                        "all_stages_min": sum(p["timing"]["total_s"] for p in per_seed.values()) / 60}
    agg["benchmark"] = per_seed[seeds[0]]["benchmark"]
    write_json_atomic(agg, out / "metrics.json")
    write_markdown_atomic(_markdown(result.command, agg, DISPLAY_NAMES), out / "metrics.md")
    print(f"[{exp.name}] {len(seeds)} seeds -> {out / 'metrics.md'}", flush=True)
    return agg
