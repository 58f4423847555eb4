"""``make demo-kernels``: how far ``make demo``'s numbers move on a machine with other CPU kernels.

The same data, recipe and training seed, trained and tested once more with PyTorch's and oneDNN's
AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``), as an AVX2 machine would
run it, instead of this machine's AVX-512 / AMX ones. Float sums then round differently, SGD's path
drifts, and every row moves a little: that drift is the cross-machine figure, kept apart from the
seed-to-seed spread (``make demo-seeds``). Writes ``<out>/metrics.json`` and ``<out>/metrics.md``: each
row under both kernel sets and their difference.

Example:
    $ python -m cream_pl.pipelines.demo_kernels --reference results/embedded --out results/embedded_kernels
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cream_pl.core.options import OneLineArgumentParser
from cream_pl.pipelines.entry import pipeline_main, preflight

__all__ = ["KERNELS", "compare", "main"]

KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
ROWS = ("cam", "cream", "cream_selected", "cream_reg")
METRICS = ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc")


def compare(reference: dict, other: dict) -> dict:
    """Per (row, metric): both values and ``other − reference``; the largest absolute move.

    Example:
        >>> compare({"cam": {"gt_known": 60.0}}, {"cam": {"gt_known": 59.5}})["max_abs_diff"]
        0.5
    """
    rows: dict[str, dict] = {}
    for row in ROWS:
        for m in METRICS:
            a, b = reference.get(row, {}).get(m), other.get(row, {}).get(m)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                rows.setdefault(row, {})[m] = {"reference": a, "other_kernels": b, "diff": b - a}
    diffs = [abs(v["diff"]) for r in rows.values() for v in r.values()]
    return {"rows": rows, "max_abs_diff": max(diffs) if diffs else None}


def _markdown(payload: dict) -> str:
    lines = ["# `make demo` under other CPU kernels", "",
             f"Produced by `make demo-kernels`: the same data, recipe and training seed as `{payload['reference']}`, "
             f"trained and tested with {', '.join(f'`{k}={v}`' for k, v in KERNELS.items())} (an AVX2 machine's "
             f"kernels) instead of this machine's `{payload['reference_kernels']}`. The difference is the drift a "
             "run may show on another machine; it is not a seed-to-seed spread (`make demo-seeds`).", "",
             "| row | metric | this machine | AVX2 kernels | difference |", "| --- | --- | ---: | ---: | ---: |"]
    for row, per in payload["rows"].items():
        for m, v in per.items():
            lines.append(f"| {row} | {m} | {v['reference']:.2f} | {v['other_kernels']:.2f} | {v['diff']:+.2f} |")
    lines += ["", f"Largest move: {payload['max_abs_diff']:.2f} points.", ""]
    return "\n".join(lines)


@pipeline_main("python -m cream_pl.pipelines.demo_kernels")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.demo_kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=Path("results/embedded"), help="make demo's results folder")
    parser.add_argument("--out", type=Path, default=Path("results/embedded_kernels"))
    parser.add_argument("--work", type=Path, default=Path("outputs/demo_kernels"))
    parser.add_argument("--skip-regressor", action="store_true", help="compare the classifier's rows only")
    args = parser.parse_args(argv)
    ref_file = args.reference / "metrics.json"
    if not ref_file.is_file():
        parser.exit(2, f"{parser.prog}: error: {ref_file}: no make demo results there (run make demo first)\n")
    import torch

    from cream_pl.core.io import atomic_write_text

    preflight(outputs=[(args.out, "--out"), (args.work, "--work")])
    here = torch.backends.cpu.get_cpu_capability()
    cmd = [sys.executable, "-m", "cream_pl.pipelines.runner", "experiments/demos/demo.yaml", "--out",
           str(args.work / "results"), "--work", str(args.work / "work")] + (
               ["--skip", "pseudo_boxes", "regressor"] if args.skip_regressor else [])
    subprocess.run(cmd, check=True, env={**os.environ, **KERNELS})
    payload = {"reference": str(args.reference), "reference_kernels": here, "kernels": KERNELS,
               **compare(json.loads(ref_file.read_text()), json.loads((args.work / "results" / "metrics.json").read_text()))}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(args.out / "metrics.md", _markdown(payload))
    print(_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
