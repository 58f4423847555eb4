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

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cream_pl.core.options import OneLineArgumentParser
from cream_pl.pipelines.entry import pipeline_main

__all__ = ["box_errors", "main", "probe_run"]

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


def probe_run(run_dir: Path, data: Path | None = None, batch_size: int = 32) -> dict[str, Any]:
    """The probe's figures of one run, per map (see the module docstring)."""
    import torch
    import yaml

    from cream_pl.data import WSOLDataModule, wsol_collate
    from cream_pl.metrics.functional import box_from_scoremap_at, prepare_scoremaps
    from cream_pl.models import WSOLClassifier

    run_dir = Path(run_dir)
    tested = json.loads((run_dir / "test.json").read_text())
    args = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {})["data"]["init_args"]
    dm = WSOLDataModule(str(data or args["data_root"]), batch_size=batch_size, eval_size=int(args.get("eval_size", 224)),
                        mean=tuple(args["mean"]), std=tuple(args["std"]))
    dm.setup("test")
    ds = dm.eval_dataset("test")
    model = WSOLClassifier.load_from_checkpoint(run_dir / "model.ckpt", map_location="cpu", pretrained=False).eval()
    taus = {m: float(tested["methods"][m]["loc_threshold"]) for m in MAPS}
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
    out: dict[str, Any] = {"run": run_dir.name, "wsol_method": tested.get("wsol_method"), "num_images": len(ds)}
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
    for run in args.runs:
        for name in ("model.ckpt", "test.json", "config.yaml"):
            if not (Path(run) / name).is_file():
                parser.error(f"{Path(run) / name}: not found (a finished make demo-methods run folder)")
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    results = [probe_run(Path(r), Path(args.data) if args.data else None) for r in args.runs]
    out = Path(args.out)
    write_json_atomic({"probe": __doc__.split("\n\n")[0], "runs": results}, out)
    write_markdown_atomic(markdown(results), out.with_suffix(".md"))
    print(markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
