"""`avtools demo --quick` end to end: synthetic clips -> shards -> train --preset demo -> eval linear and knn,
pre-trained against random init, table and figures. The fast learning check asserts the margin of xmodal and
temporal-av; the full check for every method is bench/learning.py (BENCHMARKS.md)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avtools.cli import app

MARGIN = 20.0  # linear-probe points over random init; quick runs, 4 seeds each: xmodal +59..+73, temporal-av +68..+73


def run_demo(out: Path, method: str) -> dict[str, dict]:
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu", "--method", method])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "pre-trained" in result.output and "random init" in result.output
    report = json.loads((out / "demo.json").read_text())
    assert report["method"] == method and report["steps"] == 150
    assert json.loads((out / "run" / "config.json").read_text())["method_name"] == method
    rows = {row["protocol"]: row for row in report["rows"]}
    assert set(rows) == {"linear", "knn"}
    for row in rows.values():
        assert 0 <= row["random"] <= 100 and 0 <= row["pretrained"] <= 100
        assert row["gain"] == pytest.approx(row["pretrained"] - row["random"])
    assert (out / "run" / "curves.png").stat().st_size > 1000
    assert (out / "data" / "card.png").stat().st_size > 1000
    return rows


@pytest.mark.slow
def test_demo_quick_pretraining_beats_random_init(tmp_path):
    rows = run_demo(tmp_path / "demo", "xmodal")
    assert rows["linear"]["gain"] >= MARGIN, rows


@pytest.mark.slow
def test_demo_quick_temporal_av_beats_random_init(tmp_path):
    rows = run_demo(tmp_path / "demo", "temporal-av")
    assert rows["linear"]["gain"] >= MARGIN, rows
