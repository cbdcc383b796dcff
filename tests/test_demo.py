"""`avtools demo --quick` end to end: synthetic clips -> shards -> train --preset demo -> eval linear and knn,
pre-trained against random init, table and figures. The fast learning check asserts xmodal's margin; the full
check for every method is bench/learning.py (BENCHMARKS.md)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avtools.cli import app

MARGIN = 20.0  # linear-probe points over random init; quick runs measured +68 (xmodal), +73 (temporal-av)


def run_demo(out: Path, *args: str) -> dict[str, dict]:
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "pre-trained" in result.output and "random init" in result.output
    rows = {row["protocol"]: row for row in json.loads((out / "demo.json").read_text())["rows"]}
    assert set(rows) == {"linear", "knn"}
    for row in rows.values():
        assert 0 <= row["random"] <= 100 and 0 <= row["pretrained"] <= 100
        assert row["gain"] == pytest.approx(row["pretrained"] - row["random"])
    assert (out / "run" / "curves.png").stat().st_size > 1000
    assert (out / "data" / "card.png").stat().st_size > 1000
    return rows


def test_demo_quick_pretraining_beats_random_init(tmp_path):
    rows = run_demo(tmp_path / "demo")  # xmodal, the demo's default method, 150 steps
    assert rows["linear"]["gain"] >= MARGIN, rows


def test_demo_quick_temporal_av_beats_random_init(tmp_path):
    rows = run_demo(tmp_path / "demo", "--method", "temporal-av")  # 150 steps
    assert rows["linear"]["gain"] >= MARGIN, rows
