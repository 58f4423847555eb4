"""`make bench` writes its files (quick sizes)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.bench import run_bench

    res = run_bench(tmp_path, quick=True)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["metrics"]["identical"] is True
    assert data["pseudo_boxes"]["ratio"] > 0 and data["data_loading"]["images_per_s"] > 0
    assert res["cream_cost"]["forward_cream_s"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "CREAM map cost vs CAM" in md and "per-threshold loop" in md
    assert data["cpu_training"]["contiguous_images_per_s"] > 0 and data["cpu_training"]["speedup"] > 0
    assert "channels_last vs default layout" in md
