"""A probe of why X + CREAM wins or loses against X: where each map's box goes wrong on the test images.

For each finished ``make demo-methods`` run (``<work>/<run>/model.ckpt`` + ``test.json``) and each of
its two maps, the method's own (``cam``) and the val-selected CREAM (``cream_selected``), every test
image's largest-contour box at the map's val-chosen threshold τ* (the GT-known box) is compared with
its best-matching true box: IoU, the box's area over the true box's, and whether a miss (IoU < 0.5)
is a box too large (area ratio > 1: the map spreads past the object) or too small (it keeps a part).
Beside it, the map's contrast: its mean value on the pixels inside the true boxes against outside.

Nothing here selects or tunes: it reads trained models and their val-chosen thresholds.

Example:
    $ python -m cream_pl.pipelines.probe_map_extent --runs outputs/demo_methods/cam outputs/demo_methods/acol_hlr1 \\
          --out results/embedded_methods/probe_map_extent.json
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cream_pl.core.options import OneLineArgumentParser
from cream_pl.pipelines.entry import pipeline_main

__all__ = ["box_errors", "check_run", "main", "probe_run"]

MAPS = ("cam", "cream_selected")


def box_errors(pred: np.ndarray, gts: np.ndarray) -> tuple[float, float]:
    """``(IoU, area ratio)`` of a ``XYXY_INCLUSIVE`` box against the true box it overlaps most.

    >>> box_errors(np.array([0, 0, 9, 9]), np.array([[0, 0, 4, 9], [20, 20, 30, 30]]))
    (0.5, 2.0)
    """
    def area(b: np.ndarray) -> float:
        return float(max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0))

    best = (-1.0, 0.0)
    for g in np.asarray(gts).reshape(-1, 4):
        ix = max(min(pred[2], g[2]) - max(pred[0], g[0]) + 1, 0)
        iy = max(min(pred[3], g[3]) - max(pred[1], g[1]) + 1, 0)
        inter = float(ix * iy)
        union = area(pred) + area(g) - inter
        iou = inter / union if union > 0 else 0.0
        if iou > best[0]:
            best = (iou, area(pred) / max(area(g), 1.0))
    return best


def _test_thresholds(path: Path) -> tuple[dict[str, float], Any]:
    """τ* of each map of :data:`MAPS` in a run's ``test.json`` (``methods.<map>.loc_threshold``), and its
    ``wsol_method``; anything else is one line naming the file."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import read_json_file

    tested = read_json_file(path, "a demo-methods run's test results")
    if not isinstance(tested, dict) or not isinstance(tested.get("methods"), dict):
        raise UserValueError(f"{path}: no 'methods' object (a finished make demo-methods run's test.json)")
    taus = {}
    for m in MAPS:
        entry = tested["methods"].get(m)
        tau = entry.get("loc_threshold") if isinstance(entry, dict) else None
        if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and math.isfinite(tau) and 0 <= tau <= 1):
            raise UserValueError(f"{path}: methods.{m}.loc_threshold: expected the val-chosen threshold in [0, 1], "
                                 f"got {tau!r}" + ("" if isinstance(entry, dict) else f" (no {m!r} results)"))
        taus[m] = float(tau)
    return taus, tested.get("wsol_method")


def _data_args(path: Path, data: Path | None) -> dict[str, Any]:
    """The data module's arguments in a run's ``config.yaml`` (``data.init_args``): root, eval size, mean, std."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import read_yaml_file

    config = read_yaml_file(path, "a demo-methods run's config")
    args = config.get("data", {}).get("init_args") if isinstance(config, dict) and isinstance(
        config.get("data"), dict) else None
    if not isinstance(args, dict):
        raise UserValueError(f"{path}: no data.init_args mapping (a finished make demo-methods run's config.yaml)")

    def numbers(key: str) -> tuple[float, ...]:
        v = args.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise UserValueError(f"{path}: data.init_args.{key}: expected 3 numbers, got {v!r}")
        return tuple(float(x) for x in v)

    root = args.get("data_root")
    if data is None and not (isinstance(root, str) and root):
        raise UserValueError(f"{path}: data.init_args.data_root: expected the dataset's folder, got {root!r} "
                             "(or pass --data)")
    size = args.get("eval_size", 224)
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        raise UserValueError(f"{path}: data.init_args.eval_size: expected a positive integer, got {size!r}")
    return {"data_root": Path(data) if data is not None else Path(root), "eval_size": size,
            "mean": numbers("mean"), "std": numbers("std")}


def check_run(run_dir: Path, data: Path | None = None) -> dict[str, Any]:
    """Everything a run's probe reads, checked before any probing: ``test.json``'s thresholds, ``config.yaml``'s
    data arguments, the dataset's test split, and ``model.ckpt`` a classifier with both maps of :data:`MAPS`.

    Returns:
        ``taus``, ``wsol_method``, the data module's arguments (``data_root``, ``eval_size``, ``mean``, ``std``) and the
        loaded ``model`` (the probe uses it: the checkpoint is read once).

    Raises:
        UserFileNotFoundError, UserValueError: one line naming the file (and the key) at fault.
    """
    from cream_pl.core.errors import UserFileNotFoundError
    from cream_pl.models.checkpoints import check_checkpoint_dataset, load_classifier, require_method
    from cream_pl.pipelines.entry import check_dataset_root

    run_dir = Path(run_dir)
    for name in ("model.ckpt", "test.json", "config.yaml"):
        if not (run_dir / name).is_file():
            raise UserFileNotFoundError(f"{run_dir / name}: not found (a finished make demo-methods run folder)")
    taus, method = _test_thresholds(run_dir / "test.json")
    args = _data_args(run_dir / "config.yaml", data)
    where = "--data" if data is not None else f"{run_dir / 'config.yaml'}: data.init_args.data_root"
    if not (args["data_root"] / "metadata" / "test").is_dir():
        raise UserFileNotFoundError(f"{args['data_root'] / 'metadata' / 'test'}: no test split ({where})")
    check_dataset_root(args["data_root"])
    ckpt = run_dir / "model.ckpt"
    model = load_classifier(ckpt)  # a missing, truncated or foreign file: one line naming it
    check_checkpoint_dataset(ckpt, args["data_root"], splits=("test",))  # its classes are the dataset's
    for m in MAPS:
        require_method(model, m, where=ckpt, hint=f"the probe compares its {' and '.join(MAPS)} maps")
    return {"taus": taus, "wsol_method": method, "model": model, **args}


def probe_run(run_dir: Path, data: Path | None = None, batch_size: int = 32,
              checked: dict[str, Any] | None = None) -> dict[str, Any]:
    """The probe's figures of one run, per map (see the module docstring); ``checked``: its :func:`check_run`."""
    import torch

    from cream_pl.data import WSOLDataModule, wsol_collate
    from cream_pl.metrics.functional import box_from_scoremap_at, prepare_scoremaps

    run_dir = Path(run_dir)
    run = checked if checked is not None else check_run(run_dir, data)
    dm = WSOLDataModule(str(run["data_root"]), batch_size=batch_size, eval_size=run["eval_size"],
                        mean=run["mean"], std=run["std"])
    dm.setup("test")
    ds = dm.eval_dataset("test")
    model, taus = run["model"], run["taus"]
    rows: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in MAPS}
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            batch = wsol_collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
            feats, _ = model._labelled_features(batch["image"], batch["label"])  # ACoL erases by the true class
            maps = model.method_maps(feats.float(), batch["label"], list(MAPS))
            for m in MAPS:
                prepared = prepare_scoremaps(maps[m]).numpy()
                for i, scoremap in enumerate(prepared):
                    gts = batch["boxes"][i].numpy()
                    iou, ratio = box_errors(box_from_scoremap_at(scoremap, taus[m]), gts)
                    inside = np.zeros(scoremap.shape, bool)
                    for x0, y0, x1, y1 in gts.astype(int):
                        inside[y0:y1 + 1, x0:x1 + 1] = True
                    rows[m].append((iou, ratio, float(scoremap[inside].mean()), float(scoremap[~inside].mean())))
    out: dict[str, Any] = {"run": run_dir.name, "wsol_method": run["wsol_method"], "num_images": len(ds)}
    for m in MAPS:
        a = np.array(rows[m])
        miss = a[:, 0] < 0.5
        out[m] = {"tau": taus[m], "right": float(100 * (~miss).mean()), "mean_iou": float(a[:, 0].mean()),
                  "median_area_ratio": float(np.median(a[:, 1])),
                  "misses_too_large": int((miss & (a[:, 1] > 1)).sum()), "misses_too_small": int((miss & (a[:, 1] <= 1)).sum()),
                  "map_inside_box": float(a[:, 2].mean()), "map_outside_box": float(a[:, 3].mean())}
    return out


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """One table row per (run, map)."""
    lines = ["| run | map | τ* (val) | right (IoU ≥ 0.5) % | mean IoU | median box / true box area | misses: too large |"
             " misses: too small | map inside / outside the true box |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        for m in MAPS:
            f = r[m]
            lines.append(f"| {r['run']} | {m} | {f['tau']:.3f} | {f['right']:.1f} | {f['mean_iou']:.3f} | "
                         f"{f['median_area_ratio']:.2f} | {f['misses_too_large']} | {f['misses_too_small']} | "
                         f"{f['map_inside_box']:.3f} / {f['map_outside_box']:.3f} |")
    return "\n".join(lines) + "\n"


@pipeline_main("python -m cream_pl.pipelines.probe_map_extent")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.probe_map_extent",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished demo-methods run folders")
    parser.add_argument("--data", default=None, help="the benchmark's root (default: the run's config.yaml)")
    parser.add_argument("--out", required=True, help="JSON results (a .md table is written beside it)")
    args = parser.parse_args(argv)
    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import check_output_file
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    out = Path(args.out)
    if out.suffix == ".md":
        raise UserValueError(f"{out}: --out is the JSON results; the .md table is written beside it")
    check_output_file(out, "--out")  # before any probing
    check_output_file(out.with_suffix(".md"), "--out (its .md table)")
    data = Path(args.data) if args.data else None
    checked = [check_run(Path(r), data) for r in args.runs]  # every run's files, before any probing
    results = [probe_run(Path(r), data, checked=c) for r, c in zip(args.runs, checked)]
    write_json_atomic({"probe": __doc__.split("\n\n")[0], "runs": results}, out)
    write_markdown_atomic(markdown(results), out.with_suffix(".md"))
    print(markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
