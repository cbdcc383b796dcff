"""`avtools demo --quick` end to end: synthetic clips -> shards -> train --preset demo -> eval linear and knn,
pre-trained and random init, table and figures. The learning check's margin is measured by bench/learning.py
(BENCHMARKS.md); it is not robust enough yet across runs to be asserted here."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from avtools.cli import app


@pytest.mark.parametrize("method", ["temporal-av"])
def test_demo_quick_runs_the_whole_pipeline(method, tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--method", method, "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / "demo.json").read_text())
    rows = {row["protocol"]: row for row in report["rows"]}
    assert set(rows) == {"linear", "knn"} and report["method"] == method
    for row in rows.values():
        assert 0 <= row["random"] <= 100 and 0 <= row["pretrained"] <= 100
        assert row["gain"] == pytest.approx(row["pretrained"] - row["random"])
    assert (out / "run" / "curves.png").stat().st_size > 1000
    assert (out / "data" / "card.png").stat().st_size > 1000
    assert "pre-trained" in result.output and "random init" in result.output
