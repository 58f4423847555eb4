"""``make calibrate-cub-sweep``: the calibration declaration repeated over one generator knob, CAM and center only.

``make calibrate-cub`` is a declaration run by the one runner (``experiments/demos/calibrate_cub.yaml``,
report :mod:`cream_pl.reporting.calibration_report`). This command repeats that declaration for each
value of one :class:`~cream_pl.data.synth.SynthConfig` field (``--sweep KEY=V1,V2,...``): each value's
data and runs live under ``<work>/sweep/<key>_<value>/`` and resume like any run; ``<out>/sweep.json``
and ``<out>/sweep.md`` show how the preset's one calibrated knob was chosen (the first listed value
whose CAM meets every target), from CAM and the center baseline only.

Example:
    $ python -m cream_pl.pipelines.calibrate_preset --sweep body_head_tint=0.1,0.2,0.25
    $ python -m cream_pl.pipelines.calibrate_preset --preset hard --sweep body_head_tint=0.1,0.2
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.options import OneLineArgumentParser
from cream_pl.pipelines.entry import pipeline_main, preflight, preset_name

__all__ = ["check_sweep_values", "main", "run_sweep"]

DECLARATION = Path(__file__).resolve().parents[2] / "experiments" / "demos" / "calibrate_cub.yaml"


def _parse_sweep(text: str) -> tuple[str, list[Any]]:
    from dataclasses import fields

    from cream_pl.data.synth import SynthConfig

    key, _, values = text.partition("=")
    names = {f.name: f for f in fields(SynthConfig)}
    if key not in names or not values:
        raise SystemExit(f"python -m cream_pl.pipelines.calibrate_preset: error: --sweep wants KEY=V1,V2,... with KEY a "
                         f"SynthConfig field ({', '.join(sorted(names))}), got {text!r}")
    parsed = []
    for v in values.split(","):
        try:
            parsed.append(json.loads(v))
        except json.JSONDecodeError:
            raise SystemExit(f"python -m cream_pl.pipelines.calibrate_preset: error: --sweep {text!r}: {v!r} is not a "
                             "value (a number, true/false, or a quoted string)") from None
        if any(json.dumps(parsed[-1]) == json.dumps(p) for p in parsed[:-1]):  # 0.1 and 0.10: one folder, one row
            raise SystemExit(f"python -m cream_pl.pipelines.calibrate_preset: error: --sweep {text!r}: {v} is listed "
                             "twice")
    return key, parsed


def check_sweep_values(exp: Any, key: str, values: Sequence[Any]) -> None:
    """Every swept value must give a valid generator configuration (the preset, the declaration's overrides and
    ``key: value``, :func:`cream_pl.data.synth.preset_config`); checked before any data or run folder exists.

    Raises:
        UserValueError: ``--sweep KEY=VALUE: <the generator's reason>``, the first bad value.
    """
    from cream_pl.core.errors import UserValueError
    from cream_pl.data.synth import preset_config

    if exp.dataset.preset is None:
        raise UserValueError(f"{exp.source}: dataset.preset is null (a user's dataset): there is no generator "
                             "knob to --sweep")
    for value in values:
        try:
            preset_config(exp.dataset.preset, {**exp.dataset.overrides, key: value})
        except ValueError as err:
            raise UserValueError(f"--sweep {key}={json.dumps(value)}: {err}") from None


def run_sweep(exp: Any, key: str, values: Sequence[Any], out: Path, work: Path) -> dict[str, Any]:
    """The declaration once per value of ``key`` (each in its own data and work folders); writes the sweep's files."""
    from dataclasses import replace

    from cream_pl.core.io import atomic_write_text
    from cream_pl.pipelines.runner import run_experiment
    from cream_pl.reporting.calibration_report import calibration_result, sweep_markdown

    rows, wall = [], 0.0
    for value in values:
        vwork = work / "sweep" / f"{key}_{value}"
        vexp = replace(exp, dataset=replace(exp.dataset, root=str(vwork / "data"),
                                            overrides={**exp.dataset.overrides, key: value}))
        kept: dict[str, Any] = {}

        def keep(e: Any, result: Any, _out: Path, kept: dict[str, Any] = kept) -> dict[str, Any]:
            kept.update(calibration_result(e, result), wall_s=sum(
                v for o in result.outcomes[min(result.outcomes)].values() for k, v in o.timing.items()
                if k in ("data_s", "fit_s", "test_s")))
            return kept

        run_experiment(vexp, out=vwork / "results", work=vwork / "runs", report=keep)
        wall += kept.pop("wall_s")
        rows.append({"value": value, **kept})
    chosen = next((r["value"] for r in rows if all(r["targets_met"].values())), None)
    payload = {"preset": exp.dataset.preset, "key": key, "seed": exp.dataset.seed,
               "recipe": f"experiments/{exp.runs[0].recipe}.yaml", "chosen": chosen,
               "rule": "the first listed value whose CAM meets every target on the test split", "rows": rows}
    atomic_write_text(out / "sweep.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "sweep.md", sweep_markdown(exp.dataset.preset, key, rows, wall / 60, chosen))
    print((out / "sweep.md").read_text())
    return payload


@pipeline_main("python -m cream_pl.pipelines.calibrate_preset")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.calibrate_preset",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, metavar="KEY=V1,V2,...",
                        help="one SynthConfig field and its values; writes sweep.json / sweep.md")
    parser.add_argument("--preset", default=None, type=preset_name, help="the synthetic preset to calibrate instead of the "
                        "declaration's (cub, hard)")
    parser.add_argument("--declaration", type=Path, default=DECLARATION, help="the calibration declaration")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: the declaration's)")
    parser.add_argument("--work", type=Path, default=None, help="data and runs (default: the declaration's)")
    args = parser.parse_args(argv)
    from dataclasses import replace

    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import data_variant, default_places

    try:
        key, values = _parse_sweep(args.sweep)
    except SystemExit as err:  # one line, exit status 2, like every other bad option
        raise UserValueError(str(err.code).split(": error: ", 1)[-1]) from None
    exp = load_experiment(args.declaration)
    if exp.report != "calibration":  # the sweep reads each value's calibration figures (center baseline, statistics)
        raise UserValueError(f"{args.declaration}: report: the sweep repeats a calibration declaration (report: "
                             f"calibration, like experiments/demos/calibrate_cub.yaml), got {exp.report!r}")
    # another preset's sweep has folders of its own: it never touches the declared preset's
    own_out, own_work = default_places(exp, preset=data_variant(exp, args.preset, None)[0])
    if args.preset is not None:
        exp = replace(exp, dataset=replace(exp.dataset, preset=args.preset))
    check_sweep_values(exp, key, values)  # every value, before any data, run or folder
    out, work = args.out or Path(own_out), args.work or Path(own_work)
    preflight(outputs=[(out, "--out"), (work, "--work")])  # before any data or training
    run_sweep(exp, key, values, out, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
