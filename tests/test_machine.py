"""One owner of the machine description that results files write (bench, bench-gpu, demo-kd, --compare)."""

from __future__ import annotations

import os
import platform
import re


def test_machine_facts_and_the_bench_line():
    import torch

    from cream_pl.core.machine import machine_facts, machine_text

    f = machine_facts(gpu=True)
    assert f["arch"] == platform.machine() and f["cores"] == os.cpu_count() and f["torch"] == torch.__version__
    assert f["threads"] == torch.get_num_threads() and f["cpu"] and "gpu" in f
    assert "gpu" not in machine_facts()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    assert machine_text() == f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {gpu}"
    assert re.fullmatch(r".+, \d+ CPU cores, torch \S+", machine_text(gpu=False))


def test_the_comparison_names_the_machine_as_before(tmp_path):
    """``--compare``'s comparison.json keeps its three machine keys and torch's package release (no build tag)."""
    import json
    from importlib.metadata import version

    from cream_pl.reporting.experiment_report import write_comparison

    ref = tmp_path / "reference" / "metrics.json"
    ref.parent.mkdir()
    write_comparison({"a": 1.0}, {"a": 1.0}, ref, tmp_path, "cmd")
    machine = json.loads((tmp_path / "comparison.json").read_text())["machine"]
    assert set(machine) == {"cpu", "cores", "torch"} and machine["torch"] == version("torch")
    assert machine["cores"] == os.cpu_count()
    from cream_pl.core.machine import machine_line  # the markdown names threads and kernels too

    assert (f"This report's machine: {machine_line()}; the reference's machines are not recorded (no `machines.json` "
            "beside it) (each stage's: `machines.json`).") in (tmp_path / "comparison.md").read_text()
    # where the runner recorded the machines of the run's stages (and of the reference's), those are named
    (tmp_path / "machines.json").write_text(json.dumps({"CPU X, 1 thread": ["fit_s"], "not recorded": ["data_s"]}))
    (ref.parent / "machines.json").write_text(json.dumps({"CPU Y, 2 threads": ["fit_s"]}))
    write_comparison({"a": 1.0}, {"a": 1.0}, ref, tmp_path, "cmd")
    assert ("This run's stages ran on: CPU X, 1 thread; the reference's on: CPU Y, 2 threads (each stage's: "
            "`machines.json`).") in (tmp_path / "comparison.md").read_text()


def test_the_machine_line_names_the_threads_and_kernels_torch_runs_with():
    import torch

    from cream_pl.core.machine import machine_line

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert machine_line().endswith(f", 1 thread, {torch.backends.cpu.get_cpu_capability()} kernels")
        torch.set_num_threads(2)
        assert ", 2 threads, " in machine_line()
    finally:
        torch.set_num_threads(before)
