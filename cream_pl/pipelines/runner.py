"""The one experiment runner: ``python -m cream_pl.pipelines.runner experiments/demos/<name>.yaml``.

It executes any declaration (:mod:`cream_pl.pipelines.experiment`):

1. **data**: the declared synthetic preset generated into its root (atomically, kept while it matches),
   or a user's dataset used as it is;
2. **runs**, each at each seed, in its folder under the work folder: a path-free fingerprint
   (dataset content, recipe text, overrides that are not places, the declaration's version, the thread
   count where ``--threads`` gives one, the CPU kernels where ``--kernels`` does) starts a folder of
   other inputs over; the fit (``model.ckpt``), the test (``test.json`` and the per-image records
   ``per_image_test.npz``) and every declared stage
   (:mod:`cream_pl.pipelines.run_stages`) write atomically and are skipped when done, so an interrupted
   experiment resumes by stage; each stage's time is kept in the folder's ``timing.json`` and the
   machine it ran on in ``machine.json`` (gathered into ``<out>/machines.json``: CPU, kernels, threads,
   torch). A run with ``choose`` trains each value of its training hyperparameter and val alone picks
   the one whose rows are reported;
3. **differences**: every declared ``a − b`` with a paired bootstrap 95 % interval over the test
   images, per seed (1000 resamples, seed 0);
4. **report**: the declaration's report (:data:`cream_pl.reporting.experiment_report.REPORTS`) writes
   ``metrics.json`` / ``metrics.md`` (or ``README.md``) atomically; ``--readme`` splices its block
   into the README.

Example:
    $ python -m cream_pl.pipelines.runner experiments/demos/demo.yaml            # make demo
    $ python -m cream_pl.pipelines.runner experiments/demos/demo.yaml --fast --out /tmp/o --work /tmp/w
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cream_pl.core.options import OneLineArgumentParser, int_at_least, int_in_range, seed_int
from cream_pl.pipelines.entry import pipeline_main, preflight, preset_name
from cream_pl.pipelines.run_fits import (
    MODEL_FILE,
    Outcome,
    choose_on_val,
    fit_and_test,
    fit_epochs,
    require_epoch_checkpoints,
    teacher_rows,
)

__all__ = ["DEFAULT_THREADS", "ExperimentResult", "check_run_configs", "command_line", "data_variant", "default_places", "main",
           "run_experiment", "torch_threads", "write_machines"]

LEGACY_NAMES = {"classifier.ckpt": MODEL_FILE, "classifier_test.json": "test.json"}
LEGACY_TIMES = {"classifier_s": "fit_s", "evaluation_s": "test_s"}
"""A ``make demo`` work folder of before the runner: its files and stage times under today's names."""
DEFAULT_PLACES = {"data.init_args.data_root": "{data}", "trainer.default_root_dir": "{run}"}
"""Where every run reads its data and writes its trainer's files, unless its declaration says otherwise. Whatever the
recipe's logger and callbacks write under the recipe's own ``default_root_dir`` (logs, checkpoints, pseudo boxes) moves
under the run's (:func:`~cream_pl.pipelines.run_state.recipe_places`), unless the declaration places it itself: two
runs or seeds of one recipe never share a file, and a ``--fast`` or ``--work`` run writes nothing outside its work."""

MAX_SEEDS = 100
"""The most training seeds ``--seeds N`` runs (before: a huge N ended in an OverflowError traceback)."""


@dataclass
class ExperimentResult:
    """What a report receives: per seed, the runs' outcomes, rows, records and differences."""

    outcomes: dict[int, dict[str, Outcome]]
    rows: dict[int, dict[str, Any]]
    records: dict[int, dict[str, Any]]
    differences: dict[int, dict[str, Any]]
    data: Path
    owned_data: bool
    fast: bool
    timing: dict[str, float]
    teachers: dict[str, Any] | None = None  # KD's teachers, where a run names them
    work: Path | None = None
    skipped: bool = False  # some stage was found done (this invocation's wall time is not a whole run's)
    command: str = ""  # the command line that reproduces these results (the options that change them included)


class _Runner:
    def __init__(self, exp: Any, out: Path, work: Path, data: Path, owned: bool, fast: bool,
                 log: Callable[[str], None], variant: bool = False) -> None:
        self.exp, self.out, self.work, self.data, self.owned, self.fast, self.log = exp, out, work, data, owned, fast, log
        self.variant = variant or fast  # a smoke run, another dataset or thread count: the declared seed_folders are not its
        self.timers: dict[Path, Any] = {}
        self.inputs: dict[str, dict[str, Any]] = {}  # each run's fingerprint (a student's names its teachers')
        self.teachers: dict[str, Any] | None = None
        self.threads: int | None = None  # torch's CPU threads where --threads gives them (a fingerprint input)
        self.kernels: str | None = None  # the CPU kernel set where --kernels names one (a fingerprint input)
        self.outcomes_so_far: dict[str, Outcome] = {}  # this seed's finished runs (teachers are chosen among them)
        self._eval_dm: Any = None
        self.restart = False  # --restart: each run folder inside the work folder starts over, once
        self.restarted: set[Path] = set()

    # ---------------------------------------------------------------------------------- bookkeeping
    def timer(self, folder: Path) -> Any:
        from cream_pl.pipelines.run_state import StageTimer

        path = (folder / "timing.json").resolve()
        if path not in self.timers:
            self.timers[path] = StageTimer(path, self.log)
        return self.timers[path]

    def recipe(self, name: str) -> Path:
        from cream_pl.pipelines.experiment import recipe_path

        return recipe_path(name, self.exp.source)

    def synth_config(self) -> dict[str, Any]:
        from dataclasses import asdict

        from cream_pl.data.synth import PRESETS

        ds = self.exp.dataset
        extra = self.exp.fast.get("dataset", {}) if self.fast else {}
        return json.loads(json.dumps({**asdict(PRESETS[ds.preset]), **ds.overrides, **extra}))

    def stage_data(self) -> None:
        from cream_pl.pipelines.run_state import ensure_synthetic_dataset

        t = time.time()
        ran = False
        if self.owned:
            ran = ensure_synthetic_dataset(self.data, self.synth_config(), self.exp.dataset.seed, log=self.log,
                                           what=f"the synthetic benchmark (preset {self.exp.dataset.preset!r})")
        self.data_s = (time.time() - t, ran)

    @functools.cached_property
    def data_sha1(self) -> str:
        """The dataset's identity in every run's fingerprint, hashed once (after the data stage)."""
        from cream_pl.pipelines.run_state import data_sha1

        return data_sha1(self.data)

    # ---------------------------------------------------------------------------------- one run
    def overrides(self, run: Any, seed: int, folder: Path, recipe: Path, extra: Mapping[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(resolved, fingerprinted)``: the run's overrides with places filled in, and those that are not places."""
        from cream_pl.pipelines.experiment import PLACES
        from cream_pl.pipelines.run_state import callback_index, recipe_places

        raw: dict[str, Any] = {"seed_everything": seed, **DEFAULT_PLACES, **run.overrides,
                               "model.init_args.record_per_image": list(run.record),
                               **(self.exp.fast.get("overrides", {}) if self.fast else {}), **extra}
        named: dict[str, Any] = {}
        for key, value in raw.items():
            if "[" in key:  # trainer.callbacks[ClassName].x: the recipe's callback of that class, if it has one
                head, rest = key.split("[", 1)
                name, tail = rest.split("]", 1)
                index = callback_index(recipe, name)
                if index is None:
                    continue
                key = f"{head}.{index}{tail}"
            named[key] = value
        epochs = callback_index(recipe, "EpochCheckpoints") if run.test == "epochs" else None
        if epochs is not None:  # where fit_epochs and the teachers read a per-epoch run's epochs, whatever else it says
            named |= {f"trainer.callbacks.{epochs}.init_args.dirpath": "{run}/epochs",
                      f"trainer.callbacks.{epochs}.init_args.record_path": "{run}/epochs.json"}
        root = named["trainer.default_root_dir"]
        moved = {k: v.replace("{root}", root) for k, v in recipe_places(recipe).items() if isinstance(root, str)
                 and not any(k == d or k.startswith(d + ".") or d.startswith(k + ".") for d in named)}
        places = {"{run}": str(folder), "{data}": str(self.data), "{out}": str(self.out)}
        resolved, kept = {}, {}
        for key, value in {**moved, **named}.items():
            if key in moved or isinstance(value, str) and any(p in value for p in PLACES):
                for p, v in places.items():
                    value = value.replace(p, v)
                resolved[key] = value
            else:
                resolved[key] = kept[key] = value
        return resolved, kept

    def fingerprint(self, recipe: Path, kept: Mapping[str, Any]) -> dict[str, Any]:
        from cream_pl.core.io import file_sha1

        return {"data_sha1": self.data_sha1, "recipe_sha1": file_sha1(recipe),
                "overrides": json.loads(json.dumps(dict(kept), sort_keys=True)), "version": self.exp.version,
                **({"threads": self.threads} if self.threads is not None else {}),
                **({"kernels": self.kernels} if self.kernels is not None else {})}

    def legacy(self, today: dict[str, Any], seed: int) -> Callable[[dict[str, Any]], Any]:
        """A fingerprint of the declaration's ``legacy`` layout (``{data_sha1, recipe_sha1, train_seed, fast, <version
        key>}``) that names today's inputs, mapped to today's layout (so the work is kept)."""
        def convert(stored: dict[str, Any]) -> Any:
            key, version = next(iter(self.exp.legacy.items()), (None, None))
            same = (key is not None and stored.get(key) == version and stored.get("train_seed") == seed
                    and stored.get("fast") == self.fast and stored.get("data_sha1") == today["data_sha1"]
                    and stored.get("recipe_sha1") == today["recipe_sha1"])
            return today if same else stored
        return convert

    def kept_names(self, folder: Path) -> tuple[str, ...]:
        """The entries of a run's folder that hold the dataset or the results folder (a run folder may be the work
        folder itself): never removed when the run starts over."""
        return tuple(p.resolve().relative_to(folder.resolve()).parts[0] for p in (self.data, self.out)
                     if folder.resolve() in p.resolve().parents)

    def start_over(self, folder: Path, today: dict[str, Any], name: str, seed: int, legacy: bool = False) -> None:
        """Make ``folder`` hold the work of ``today``'s inputs (:func:`~cream_pl.pipelines.run_state.start_over_if_stale`),
        forgetting its stage times when it is cleared."""
        from cream_pl.pipelines.run_state import start_over_if_stale

        folder.mkdir(parents=True, exist_ok=True)
        here = folder.resolve()
        restart = self.restart and (here == self.work.resolve() or self.work.resolve() in here.parents) \
            and here not in self.restarted  # a declared seed folder elsewhere (make demo's) is never restarted
        self.restarted.add(here)
        if start_over_if_stale(folder, today, self.log, legacy=self.legacy(today, seed) if legacy else None,
                               keep=self.kept_names(folder), name=f"{name} (seed {seed})", restart=restart):
            self.timer(folder).clear()

    def migrate(self, folder: Path) -> None:
        from cream_pl.pipelines.run_state import read_state

        for old, new in LEGACY_NAMES.items():
            if (folder / old).exists() and not (folder / new).exists():
                os.replace(folder / old, folder / new)
        timing = folder / "timing.json"
        saved = read_state(timing, log=None)  # damaged: StageTimer says so
        if saved is not None:
            if any(k in saved for k in LEGACY_TIMES):
                from cream_pl.reporting.tables import write_json_atomic

                write_json_atomic({LEGACY_TIMES.get(k, k): v for k, v in saved.items()}, timing)

    def run(self, run: Any, seed: int, stages: Sequence[str]) -> Outcome:
        from cream_pl.pipelines.run_stages import STAGES, RunContext

        base = None if self.variant else run.seed_folders.get(seed)  # a variant never touches a declared run's work
        folder = Path(base) if base is not None else self.work / run.folder_name(seed)
        if run.test == "epochs":
            return fit_epochs(self, run, seed, folder)
        if run.choose is None:
            outcome = fit_and_test(self, run, seed, folder, {})
        else:
            c = run.choose
            tried = {v: fit_and_test(self, run, seed, folder if i == 0 else folder.with_name(f"{folder.name}{c.suffix}{v:g}"),
                                          {} if i == 0 else {c.key: v}) for i, v in enumerate(c.values)}
            scores = {v: o.val.get(c.val, float("nan")) for v, o in tried.items()}
            chosen = choose_on_val(scores)
            self.log(f"{run.key}: {c.key.rsplit('.', 1)[-1]} chosen on val: {chosen:g} ("
                     + ", ".join(f"{v:g} {s:.2f}" for v, s in scores.items()) + ")")
            outcome = tried[chosen]
            outcome.choice = {"chosen": chosen, "recipe": c.values[0], "val_metric": c.val, "tried": tried}
            for o in tried.values():
                o.live = None if o is not outcome else o.live  # only the chosen model is kept in memory
        (cli, model, ckpt, records), outcome.live = outcome.live, None
        ctx = RunContext(run.key, seed, outcome.folder, self.data, self.out, self.fast, cli, model, ckpt,
                         outcome.test, records, self.log)
        timer = self.timer(outcome.folder)
        for name in stages:
            stage = STAGES[name]
            t, ran = time.time(), not stage.done(ctx)
            result = dict(stage.run(ctx))
            if stage.timer:
                timer.record(stage.timer, time.time() - t, ran)
            outcome.rows.update(result.pop("rows", {}))
            outcome.records.update(result.pop("records", {}))
            ctx.outputs[name] = outcome.stages[name] = result
        return outcome


def run_experiment(exp: Any, *, out: Path | str | None = None, work: Path | str | None = None,
                   data: Path | str | None = None, fast: bool = False, restart: bool = False,
                   seeds: Sequence[int] | None = None, only: Sequence[str] | None = None,
                   skip: Sequence[str] = (), readme: Path | str | None = None,
                   preset: str | None = None, data_seed: int | None = None, threads: int | None = None,
                   kernels: str | None = None, log: Callable[[str], None] | None = None,
                   report: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Execute a declaration (see the module docstring); returns the report's payload (``metrics.json``'s content).

    ``data``: a user's dataset instead of the declared one (used as it is); ``preset`` / ``data_seed``: the
    declared synthetic dataset's preset / generator seed instead of the declaration's; ``threads``: torch's CPU threads
    instead of one per core (a variant: a work folder of its own, in the fingerprint and the command line; set for the
    runs, then restored); ``kernels``: a CPU kernel set of :data:`cream_pl.core.machine.KERNEL_SETS` instead of the
    machine's own (a variant too; set before torch's first operation, else refused); ``seeds``: training seeds
    instead of each run's; ``only``: a subset of the runs; ``skip``: stages left out; ``readme``: splice the
    report's block into it; ``report``: a report function instead of the declaration's (a caller that gathers
    several experiments).
    """
    from dataclasses import replace

    from cream_pl.pipelines.run_stages import publish_figures
    from cream_pl.pipelines.run_state import check_work_dataset, check_work_folder
    from cream_pl.reporting.evidence import compute_differences
    from cream_pl.reporting.experiment_report import report_function

    preset, data_seed = data_variant(exp, preset, data_seed)
    options: dict[str, Any] = {"fast": fast, "seeds": seeds, "data": data, "only": only, "preset": preset,
                               "data_seed": data_seed, "threads": threads, "kernels": kernels}  # what names a variant
    command = command_line(exp, skip=skip, **options)
    if preset is not None or data_seed is not None:
        ds = exp.dataset
        exp = replace(exp, dataset=replace(ds, preset=preset or ds.preset, seed=ds.seed if data_seed is None else data_seed))
    start = time.time()
    log = log or (lambda msg: print(f"[{exp.name}] {msg}", flush=True))
    own_out, own_work = default_places(exp, **options)
    work = Path(work) if work is not None else Path(own_work)
    out = Path(out) if out is not None else Path(own_out)
    owned = data is None and exp.dataset.preset is not None
    variant = fast or preset is not None or data_seed is not None or data is not None  # never touches the declared
    root = Path(data) if data is not None else (work / "data" if variant and owned  # dataset or its runs' work
                                                else Path(exp.dataset.root.replace("{work}", str(work))))
    if kernels is not None:
        from cream_pl.core.machine import use_kernels

        use_kernels(kernels)
    runner = _Runner(exp, out, work, root, owned, fast, log, variant=variant or threads is not None or kernels is not None)
    runner.threads, runner.kernels = threads, kernels
    check_results_folder(out, root, exp.report, exp.name, None if owned else runner.data_sha1)
    runs = [r for r in exp.runs if not only or r.key in only]
    for run in runs:  # every config the runs build, before any work
        check_run_configs(runner, run, f"{exp.source}: runs[{exp.runs.index(run)}] ({run.key}, {run.recipe})")
    check_work_folder(work)  # a user's folder is refused before a run could remove anything in it
    runner.restart = restart  # each run folder of this invocation inside the work folder starts over, once
    with torch_threads(threads):  # the runs, their stages and the report at this thread count
        # another experiment's or dataset's runs are never cleared, nor a dataset kept in their work regenerated
        check_work_dataset(work, root, None if owned else runner.data_sha1, restart, exp.name)
        runner.stage_data()
        check_work_dataset(work, root, runner.data_sha1, restart, exp.name)  # the dataset as it is now
        check_results_folder(out, root, exp.report, exp.name, runner.data_sha1)  # a generated dataset, now
        mark_results_folder(out, exp.name, runner.data_sha1, root)
        publish_figures(out, keep=False)  # figures a run cut short staged: never published with this report
        all_seeds = sorted({s for r in runs for s in (seeds if seeds is not None else r.seeds)})
        outcomes: dict[int, dict[str, Outcome]] = {}
        for seed in all_seeds:
            runner.outcomes_so_far = outcomes.setdefault(seed, {})
            for run in runs:
                if seed in (seeds if seeds is not None else run.seeds):
                    stages = [s for s in run.stages if s not in skip]
                    outcomes[seed][run.key] = runner.run(run, seed, stages)
            if runner.teachers is not None:  # the teachers' own rows, beside the student's
                extra_rows, extra_records = teacher_rows(runner, seed)
                first = next(iter(outcomes[seed].values()))
                first.rows.update(extra_rows)
                first.records.update(extra_records)
        rows, records, differences = {}, {}, {}
        t = time.time()
        for seed, by_run in outcomes.items():
            rows[seed] = {k: v for o in by_run.values() for k, v in o.rows.items()}
            records[seed] = {k: v for o in by_run.values() for k, v in o.records.items()}
            pairs = [(d.a, d.b, d.metrics) for d in exp.differences if d.a in records[seed] and d.b in records[seed]]
            differences[seed] = compute_differences(records[seed], pairs, n_resamples=1000, seed=0)
        left_out = [f"{d.a} - {d.b}" for d in exp.differences
                    if not any(d.a in rec and d.b in rec for rec in records.values())]
        if left_out:  # before: dropped from the report without a word
            log("differences left out, a row of each not given by this invocation's runs and stages (--only, --skip): "
                + ", ".join(left_out))
        bootstrap_s = time.time() - t
        data_s, data_ran = runner.data_s
        timing = {"data_s": data_s, "data_ran": data_ran, "bootstrap_s": bootstrap_s}
        for i, by_run in enumerate(outcomes.values()):  # the experiment's own stages: once, beside its first run's
            if i == 0:
                first = runner.timer(next(iter(by_run.values())).folder)
                first.record("data_s", data_s, data_ran)
                first.record("bootstrap_s", bootstrap_s, True)
            for o in by_run.values():
                o.timing = dict(runner.timer(o.folder).saved)
        timing["this_invocation_s"] = time.time() - start
        result = ExperimentResult(outcomes, rows, records, differences, runner.data, owned, fast, timing,
                                  teachers=runner.teachers, skipped=any(t.skipped for t in runner.timers.values()),
                                  work=work, command=command)
        payload = (report or report_function(exp.report))(exp, result, out)
        publish_figures(out, keep=True)
        write_machines(runner.timers.values(), work, out / "machines.json")
        if readme is not None and exp.readme:
            from cream_pl.reporting.experiment_report import splice_block

            splice_block(exp, payload, out, Path(readme))
        log(f"results in {out}" + (f" (README block spliced into {readme})" if readme is not None and exp.readme
                                   else ""))
        return payload


def write_machines(timers: Any, work: Path, path: Path) -> dict[str, list[str]]:
    """``path`` (JSON): each machine (:func:`cream_pl.core.machine.machine_line`) -> the stages that ran on it, as
    ``<run folder>/<stage>`` (the folder relative to ``work``, none for ``work`` itself); a stage found done whose
    machine was not recorded (its files made by another stage, or before machines were kept): ``not recorded``."""
    from cream_pl.reporting.tables import write_json_atomic

    machines: dict[str, list[str]] = {}
    for timer in timers:
        folder = os.path.relpath(timer.path.parent, Path(work).resolve())
        for stage in timer.saved:
            machines.setdefault(timer.machine.get(stage, "not recorded"), []).append(
                stage if folder == "." else f"{folder}/{stage}")
    machines = {m: sorted(stages) for m, stages in machines.items()}
    write_json_atomic(machines, path)
    return machines


DEFAULT_THREADS = max(1, os.cpu_count() or 1)
"""The runner's torch CPU threads without ``--threads``: one per core (torch's own default can be fewer)."""


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Any:
    """Run the body at ``threads`` torch CPU threads (as it is where ``None``), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def command_line(exp: Any, *, fast: bool = False, seeds: Sequence[int] | None = None, data: Path | str | None = None,
                 only: Sequence[str] | None = None, skip: Sequence[str] = (), preset: str | None = None,
                 data_seed: int | None = None, threads: int | None = None, kernels: str | None = None) -> str:
    """The runner's command line that reproduces an experiment's numbers: the declaration and every option that
    changes them (places such as ``--out`` or ``--work`` do not).

    Example:
        >>> from types import SimpleNamespace
        >>> command_line(SimpleNamespace(source="experiments/demos/demo.yaml"), fast=True, seeds=[0, 1], skip=["regressor"])
        'python -m cream_pl.pipelines.runner experiments/demos/demo.yaml --fast --seeds 2 --skip regressor'
        >>> command_line(SimpleNamespace(source="experiments/demos/demo.yaml"), seeds=[3], preset="hard", data_seed=1)
        'python -m cream_pl.pipelines.runner experiments/demos/demo.yaml --train-seed 3 --preset hard --data-seed 1'
        >>> command_line(SimpleNamespace(source="experiments/demos/demo.yaml"), threads=1, skip=["regressor"])
        'python -m cream_pl.pipelines.runner experiments/demos/demo.yaml --threads 1 --skip regressor'
        >>> command_line(SimpleNamespace(source="experiments/demos/demo.yaml"), kernels="avx2")
        'python -m cream_pl.pipelines.runner experiments/demos/demo.yaml --kernels avx2'
    """
    source, root = Path(exp.source).resolve(), Path(__file__).resolve().parents[2]
    words = ["python -m cream_pl.pipelines.runner",  # a shipped declaration as the repository names it
             source.relative_to(root).as_posix() if root in source.parents else str(exp.source)]
    if fast:
        words.append("--fast")
    if seeds is not None:
        words.append(f"--seeds {len(seeds)}" if list(seeds) == list(range(len(seeds))) else
                     f"--train-seed {seeds[0]}" if len(seeds) == 1 else "--seeds " + ",".join(map(str, seeds)))
    if data is not None:
        words.append(f"--data {data}")
    if preset is not None:
        words.append(f"--preset {preset}")
    if data_seed is not None:
        words.append(f"--data-seed {data_seed}")
    if threads is not None:
        words.append(f"--threads {threads}")
    if kernels is not None:
        words.append(f"--kernels {kernels}")
    for option, values in (("--only", only), ("--skip", skip)):
        if values:
            words.append(f"{option} {' '.join(values)}")
    return " ".join(words)


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="a declaration (experiments/demos/*.yaml)")
    parser.add_argument("--out", default=None, help="results folder (default: the declaration's, or a variant's "
                        "own: see default_places)")
    parser.add_argument("--work", default=None, help="work folder of the runs (default: the declaration's, or a "
                        "variant's own)")
    parser.add_argument("--data", default=None, help="a dataset in the benchmark format instead of the declared one")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int_in_range(1, MAX_SEEDS, "seed count"), default=None,
                       help=f"run every run at training seeds 0 .. N-1 instead of its own (N <= {MAX_SEEDS})")
    seeds.add_argument("--train-seed", type=seed_int, default=None, help="run every run at this one training seed")
    parser.add_argument("--preset", default=None, type=preset_name, help="the declared synthetic dataset's preset instead of the "
                        "declaration's (cub, hard)")
    parser.add_argument("--data-seed", type=seed_int, default=None,
                        help="the declared synthetic dataset's generator seed instead of the declaration's")
    parser.add_argument("--only", nargs="+", default=None, help="a subset of the runs, by key")
    parser.add_argument("--skip", nargs="+", default=(), help="stages to leave out (e.g. regressor)")
    parser.add_argument("--threads", type=int_at_least(1), default=None,
                        help="torch's CPU threads (default: one per core; OMP_NUM_THREADS is not read). Another count "
                        "rounds float sums otherwise and trains another model, so a given count is a variant: a work "
                        "folder of its own, in the fingerprint and the command line")
    parser.add_argument("--kernels", default=None, choices=("avx2",),
                        help="compute with these CPU kernels instead of the machine's own (avx2: an AVX2 machine's, "
                        "via ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA). Other kernels round float sums otherwise: "
                        "a variant, like --threads")
    parser.add_argument("--fast", action="store_true", help="the declaration's smoke-test size (tiny data, one epoch)")
    parser.add_argument("--restart", action="store_true",
                        help="start every run of this invocation over: its folders inside the work folder are cleared "
                             "(the dataset is kept: its content hash is in every fingerprint)")
    parser.add_argument("--readme", nargs="?", const=DECLARED_README, default=None, metavar="README",
                        help="splice the report's block into this README (alone: the declaration's readme.file)")
    parser.add_argument("--compare", default=None, metavar="METRICS_JSON",
                        help="then compare every number of the new results file of this name with this one (times "
                        "and machine aside, to 1e-9) and every stated difference's verdict, into <out>/comparison.md; "
                        "exit status 1 when a number differs")
    return parser


def default_places(exp: Any, *, fast: bool = False, preset: str | None = None, data_seed: int | None = None,
                   data: Path | str | None = None, seeds: Sequence[int] | None = None,
                   only: Sequence[str] | None = None, threads: int | None = None,
                   kernels: str | None = None) -> tuple[str, str]:
    """``(out, work)`` when the caller names neither: the declaration's, or, for a variant of its data (another
    ``preset`` or ``data_seed``, a user's ``data``) or a ``--fast`` smoke run, a folder of the variant's own beside
    the declared work folder (its dataset and results inside): a variant never touches the declared run's dataset,
    work or results. One training seed where the declaration has other or more (``--train-seed``), seeds ``0 .. N-1``
    where the declaration has others (``--seeds N``: ``<out>_<N>seeds``) and a subset of the runs (``--only``)
    report into a results folder of their own (their runs are the declared runs' folders, or folders of their own
    beside them), so they never overwrite the declared report. ``preset`` / ``data_seed`` are the
    variant's (see :func:`data_variant`); a run at a thread count given explicitly (``threads``) or on another kernel
    set (``kernels``) trains in a work folder of its own, its results inside, on the declared dataset.

    Example:
        >>> from types import SimpleNamespace
        >>> exp = SimpleNamespace(out="results/embedded", work="outputs/demo",
        ...                       runs=[SimpleNamespace(key="cream", seeds=(0,)), SimpleNamespace(key="ci", seeds=(0,))])
        >>> default_places(exp), default_places(exp, fast=True), default_places(exp, preset="hard", data_seed=1)
        (('results/embedded', 'outputs/demo'), ('outputs/demo_fast/results', 'outputs/demo_fast'), ('outputs/demo_hard_dataseed1/results', 'outputs/demo_hard_dataseed1'))
        >>> default_places(exp, seeds=[0]), default_places(exp, seeds=[3]), default_places(exp, seeds=[0, 1, 2])
        (('results/embedded', 'outputs/demo'), ('results/embedded_trainseed3', 'outputs/demo'), ('results/embedded_3seeds', 'outputs/demo'))
        >>> two = SimpleNamespace(out="results/x", work="outputs/x", runs=[SimpleNamespace(key="a", seeds=(0, 1))])
        >>> default_places(two, seeds=[1])  # one seed of two: not the declared two-seed report
        ('results/x_trainseed1', 'outputs/x')
        >>> default_places(exp, data="/data/my_birds/"), default_places(exp, fast=True, only=["ci"])
        (('outputs/demo_my_birds/results', 'outputs/demo_my_birds'), ('outputs/demo_fast/results_only-ci', 'outputs/demo_fast'))
        >>> default_places(exp, threads=1), default_places(exp, kernels="avx2")
        (('outputs/demo_threads1/results', 'outputs/demo_threads1'), ('outputs/demo_avx2kernels/results', 'outputs/demo_avx2kernels'))
    """
    tag = "".join(f"_{p}" for p in (None if data is None else Path(data).resolve().name, preset,
                                     None if data_seed is None else f"dataseed{data_seed}",
                                     None if threads is None else f"threads{threads}",
                                     None if kernels is None else f"{kernels}kernels", "fast" if fast else None)
                  if p is not None)
    out, work = (exp.out, exp.work) if not tag else (f"{exp.work}{tag}/results", f"{exp.work}{tag}")
    if seeds is not None and {s for r in exp.runs for s in r.seeds} != set(seeds):  # never the declared report
        out += f"_trainseed{seeds[0]}" if len(seeds) == 1 else f"_{len(seeds)}seeds"  # one seed, or other seeds
    if only and set(only) != {r.key for r in exp.runs}:
        out += "_only-" + "-".join(sorted(only))
    return out, work


def data_variant(exp: Any, preset: str | None, data_seed: int | None) -> tuple[str | None, int | None]:
    """``(preset, data_seed)`` as a variant of the declared dataset: ``None`` where one equals the declaration's own
    (``--preset cub`` on a cub declaration is the declared run, with its folders and its command line).

    Example:
        >>> from types import SimpleNamespace
        >>> exp = SimpleNamespace(dataset=SimpleNamespace(preset="cub", seed=0))
        >>> data_variant(exp, "cub", 0), data_variant(exp, "hard", 0), data_variant(exp, None, 2)
        ((None, None), ('hard', None), (None, 2))
    """
    ds = exp.dataset
    return (None if preset == ds.preset else preset), (None if data_seed == ds.seed else data_seed)


def check_run_configs(r: _Runner, run: Any, origin: str) -> None:
    """The configs ``run`` builds (its recipe with its overrides, at each value it chooses from), parsed before any
    work: a key the classes do not take, or a value of the wrong type, is one line beginning with ``origin``."""
    from cream_pl.pipelines.recipe_builder import check_recipe

    recipe = r.recipe(run.recipe)
    values = [None, *run.choose.values[1:]] if run.choose is not None else [None]
    for v in values:
        extra = {} if v is None else {run.choose.key: v}
        check_recipe(recipe, r.overrides(run, 0, r.work / run.key, recipe, extra)[0], origin, build=True,
                     selects="cream_selected" in run.record)


DECLARED_README = "<the declaration's readme.file>"
"""``--readme`` given alone: the README the declaration names."""

RESULTS_OWNER = ".cream-pl-results.json"
"""``<out>/.cream-pl-results.json``: the experiment whose report a results folder holds, and its dataset's root and
content hash (``{"experiment": name, "data_sha1": sha1, "root": resolved root}``)."""


def check_results_folder(out: Path, data: Path, report: str, experiment: str | None = None,
                         sha1: str | None = None) -> None:
    """``out`` is not the dataset's root, and holds neither another experiment's report (its
    :data:`RESULTS_OWNER`: ``make demo OUT=results/embedded_seeds`` replaced demo-seeds' results without a word) nor
    another dataset's results (``make demo DATA=b OUT=<a's>``). Another dataset is another root with other content,
    as for the work folder (the same data moved, or edited in place, is the same dataset; ``sha1`` is ``None`` before
    a dataset the runner generates exists: checked again after the data stage); for results of before the owner's
    hash, the ``benchmark.data`` path a report names. A folder without a report is never refused."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.run_state import read_state
    from cream_pl.reporting.experiment_report import RESULTS_FILE

    if out.resolve() == data.resolve():
        raise UserValueError(f"{out}: the results folder is the dataset's root; give another (--out; make demo: OUT=)")
    if (out / "metadata").is_dir():  # another dataset's root (before: metrics written beside its images/)
        raise UserValueError(f"{out}: holds a dataset (metadata/); the results folder must be another (--out; make "
                             "demo: OUT=)")
    owner = read_state(out / RESULTS_OWNER, log=None) or {}
    if not any((out / name).is_file() for name in {*RESULTS_FILE.values(), "metrics.json"}):
        return  # no report of any experiment there (a run stopped before its report marked it): nothing to lose
    theirs = owner.get("experiment")
    again = "nothing was written: give this one another results folder (--out; make demo: OUT=), or remove them"
    if experiment is not None and isinstance(theirs, str) and theirs != experiment:
        raise UserValueError(f"{out}: holds the results of experiment {theirs!r}, not {experiment!r}; {again}")
    if isinstance(owner.get("data_sha1"), str):  # as the work folder's check: another root *and* other content
        root = owner.get("root")
        if sha1 is not None and owner["data_sha1"] != sha1 and isinstance(root, str) and (
                Path(root).resolve() != data.resolve()):
            raise UserValueError(f"{out}: holds the results of another dataset ({owner.get('root')}), not of "
                                 f"{data}; {again}")
        return
    try:
        earlier = json.loads((out / RESULTS_FILE.get(report, "metrics.json")).read_text())
    except (OSError, ValueError):
        return
    theirs = earlier.get("benchmark", {}).get("data") if isinstance(earlier, dict) else None
    if isinstance(theirs, str) and isinstance(earlier.get("benchmark"), dict) and Path(theirs).resolve() != data.resolve():
        raise UserValueError(f"{out}: holds the results of another dataset ({theirs}), not of {data}; {again}")


def mark_results_folder(out: Path, experiment: str, sha1: str | None = None, root: Path | None = None) -> None:
    """Create ``out`` and record ``experiment`` and its dataset (``root``, content hash ``sha1``) as the owner of the
    report it will hold (see :func:`check_results_folder`)."""
    from cream_pl.pipelines.run_state import read_state
    from cream_pl.reporting.tables import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    if root is not None:  # relative to the current folder where inside it: a results folder in git names no user's
        here, cwd = root.resolve(), Path.cwd().resolve()  # machine (data/synth, not /home/me/cream-pl/data/synth)
        root = here.relative_to(cwd) if cwd in here.parents else here
    owner = {"experiment": experiment, **({"data_sha1": sha1, "root": root.as_posix()}
                                          if sha1 is not None and root is not None else {})}
    if read_state(out / RESULTS_OWNER, log=None) != owner:
        write_json_atomic(owner, out / RESULTS_OWNER)


_CREAM_PL_CALLBACKS = ("EpochCheckpoints", "PseudoBoxesAtFitEnd", "WSOLMediaCallback")


def check_callback_name(recipes: Sequence[Path], key: str, where: str) -> None:
    """``trainer.callbacks[Name]...``: a callback one of the declaration's ``recipes`` has, or at least a real callback
    class (a recipe without it leaves the override out); a typo was silently left out too."""
    from cream_pl.pipelines.run_state import callback_index

    name = key.split("[", 1)[1].split("]", 1)[0]
    if name in _CREAM_PL_CALLBACKS or any(callback_index(recipe, name) is not None for recipe in recipes):
        return
    import pytorch_lightning as pl

    known = getattr(pl.callbacks, name, None)
    if not (isinstance(known, type) and issubclass(known, pl.Callback)):
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{where}: {key}: {name!r} is no callback class (cream-pl's: "
                             f"{list(_CREAM_PL_CALLBACKS)}, or one of pytorch_lightning.callbacks)")


def least_seeds(exp: Any) -> int:
    """How many training seeds the declaration needs: ``settings: {min_seeds: N}``, and its report's own minimum
    (the seeds report's spread: 2); 1 without either."""
    from cream_pl.reporting.experiment_report import MIN_SEEDS

    return max(int(exp.settings.get("min_seeds", 1)), MIN_SEEDS.get(exp.report, 1))


@pipeline_main("python -m cream_pl.pipelines.runner")
def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.kernels is not None:  # before torch's first operation, which fixes its kernels
        from cream_pl.core.machine import use_kernels

        use_kernels(args.kernels)
    from cream_pl.pipelines.experiment import load_experiment

    exp = load_experiment(args.experiment)
    unknown = sorted(set(args.only or ()) - {r.key for r in exp.runs})
    if unknown:
        parser.error(f"--only: unknown run {unknown[0]!r}; the declaration has {[r.key for r in exp.runs]}")
    from cream_pl.pipelines.run_stages import STAGES

    bad = sorted(set(args.skip) - set(STAGES))
    if bad:
        parser.error(f"--skip: unknown stage {bad[0]!r}; known: {sorted(STAGES)}")
    if args.data is not None:
        from cream_pl.data.metadata import split_has_boxes

        if not (Path(args.data) / "metadata" / "test" / "image_ids.txt").is_file():
            parser.error(f"{args.data}: no dataset in the benchmark format there (expected metadata/test/image_ids.txt)")
        if not split_has_boxes(Path(args.data) / "metadata" / "test"):
            parser.error(f"{Path(args.data) / 'metadata' / 'test'}: no boxes in the test split; the experiments' "
                         "tables and differences need boxes (score a mask-only dataset with `cream-pl test`)")
        from cream_pl.reporting.experiment_report import data_check

        check = data_check(exp.report)
        if check is not None:
            try:
                check(Path(args.data))
            except ValueError as err:
                parser.error(f"{err} (--data)")
    if args.preset is not None or args.data_seed is not None:
        option = "--preset" if args.preset is not None else "--data-seed"
        if args.data is not None:
            parser.error(f"{option}: not with --data (a user's dataset is used as it is)")
        if exp.dataset.preset is None:
            parser.error(f"{option}: {exp.source} declares no synthetic dataset (dataset.preset is null)")
    least = least_seeds(exp)
    if args.train_seed is not None and least > 1:
        parser.error(f"--train-seed: {exp.source} needs at least {least} seeds (use --seeds)")
    if args.seeds is not None and args.seeds < least:
        parser.error(f"--seeds: {exp.source} needs at least {least} seeds, got {args.seeds}")
    if args.seeds is None and args.train_seed is None:  # the declared seeds: [0, 0] or [0] for a spread
        short = next(((i, r) for i, r in enumerate(exp.runs) if len(r.seeds) < least), None)
        if short is not None:
            parser.error(f"{exp.source}: runs[{short[0]}].seeds: {list(short[1].seeds)}, but it needs at least {least} "
                         "seeds (settings.min_seeds, or its report's spread); declare more, or give --seeds N")
    from cream_pl.reporting.experiment_report import ONE_SEED

    if args.seeds is not None and args.seeds > 1 and exp.report in ONE_SEED:
        parser.error(f"--seeds: {exp.source}'s report ({exp.report}) shows one training seed; use --train-seed S, or "
                     "a declaration with a seeds report (experiments/demos/demo_seeds.yaml)")
    seeds = list(range(args.seeds)) if args.seeds else [args.train_seed] if args.train_seed is not None else None
    preset, data_seed = data_variant(exp, args.preset, args.data_seed)
    options: dict[str, Any] = {"fast": args.fast, "seeds": seeds, "data": args.data, "only": args.only,
                               "preset": preset, "data_seed": data_seed, "threads": args.threads,
                               "kernels": args.kernels}  # one set for the places, the runs and the command line
    own_out, own_work = default_places(exp, **options)
    out, work = args.out or own_out, args.work or own_work
    if args.readme is DECLARED_README:  # the file the declaration names (before: never read)
        args.readme = exp.readme.get("file") if exp.readme else None
        if args.readme is None:
            parser.error(f"--readme: {exp.source} fills no README block (its readme: is null)")
    if args.readme is not None and own_out != exp.out:
        parser.error(f"--readme: the README shows {exp.source}'s declared results, and a variant (--fast, --preset, "
                     "--data-seed, --data, --seeds, --only, --threads or --kernels) gives others (leave out --readme)")
    if args.readme is not None:  # its block must be there before any work, not found missing after it
        begin, end = (f"<!-- {exp.readme.get('block')}:{m} -->" for m in ("BEGIN", "END"))
        if not exp.readme:
            parser.error(f"--readme: {exp.source} fills no README block (its readme: is null)")
        if not Path(args.readme).is_file():
            parser.error(f"{args.readme}: file not found (--readme)")
        try:
            text = Path(args.readme).read_text()
        except UnicodeDecodeError:
            parser.error(f"{args.readme}: not UTF-8 text (--readme)")
        from cream_pl.reporting.demo_report import has_block

        if not has_block(text, begin, end):
            parser.error(f"{args.readme}: needs exactly one {begin} ... {end} block, in that order (--readme)")
    if args.restart and args.work is None and work == exp.work and (seeds is not None or args.only):
        parser.error(f"--restart: {work} holds every declared run; with --train-seed/--seeds/--only name the "
                     "folder to clear with --work, or remove it yourself")
    runner = _Runner(exp, Path(out), Path(work), Path("."), False, args.fast, print)
    recipes: list[Path] | None = None  # every run's, read once where an override names a callback by class
    for i, run in enumerate(exp.runs):  # every recipe before any work
        if not args.only or run.key in args.only:
            try:
                recipe = runner.recipe(run.recipe)
                if run.test == "epochs":
                    require_epoch_checkpoints(recipe, run.key)
            except (FileNotFoundError, ValueError) as err:
                parser.error(f"{err} (runs[{i}].recipe)")
            named = [k for k in (*run.overrides, *(exp.fast.get("overrides", {}) if args.fast else {})) if "[" in k]
            if named and recipes is None:
                recipes = [runner.recipe(r.recipe) for r in exp.runs]
            for key in named:
                check_callback_name(recipes or [], key, f"{exp.source}: runs[{i}].overrides")
    users = (exp.dataset.root.replace("{work}", str(work))  # a dataset used as it is
             if args.data is None and exp.dataset.preset is None else None)
    preflight(outputs=[(out, "--out"), (work, "--work")], inputs=[(args.compare, "--compare")], data=args.data or users)
    if args.data or users:  # every run selects on val and reports on test (before: trained, then a traceback)
        meta = Path(args.data or users) / "metadata"
        for split in ("train", "val", "test"):
            if not (meta / split).is_dir():
                from cream_pl.core.errors import UserValueError

                raise UserValueError(f"{meta / split}: no such split; an experiment trains on train, chooses τ* and "
                                     "CREAM's settings on val (the protocol's fully supervised split) and reports on "
                                     "test (a CUB conversion: cream-pl data cub --val-per-class N)")
    reference = None
    if args.compare is not None:  # read before any work: a file that is not JSON is one line now, not after the runs
        try:
            reference = json.loads(Path(args.compare).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            parser.error(f"{args.compare}: not a JSON results file ({err}) (--compare)")
        if not isinstance(reference, dict):
            parser.error(f"{args.compare}: not a results file (a JSON object, as the report writes), got a "
                         f"{type(reference).__name__} (--compare)")
        from cream_pl.reporting.experiment_report import SIGNATURE

        if SIGNATURE[exp.report] not in reference:
            parser.error(f"{args.compare}: not the results of a {exp.report!r} report, which {exp.source} writes (it "
                         f"has no {SIGNATURE[exp.report]!r}) (--compare)")
    import torch

    torch.set_num_threads(DEFAULT_THREADS)
    run_experiment(exp, out=out, work=work, restart=args.restart, skip=args.skip, readme=args.readme, **options)
    if args.compare is not None:
        from cream_pl.reporting.experiment_report import RESULTS_FILE, write_comparison

        new = json.loads((Path(out) / RESULTS_FILE.get(exp.report, "metrics.json")).read_text())  # whatever its name
        command = command_line(exp, skip=args.skip, **options)
        line, diffs = write_comparison(new, reference, Path(args.compare), Path(out), command)
        print(f"[{exp.name}] against {args.compare}: {line}" + ("" if not diffs else ": " + "; ".join(diffs[:10]))
              + f" ({Path(out) / 'comparison.md'})", flush=True)
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
