"""Result rows to a rich table and results.json; `--compare` puts several results files side by side.

results.json: {"rows": [Row...], "command": ..., "config": {...}}. Every row names dataset, split, protocol,
modality, its metrics, the full protocol settings and the encoder (checkpoint, hash, method, step).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from avcl.eval.engine import Row


def label(row: dict) -> str:
    family = row.get("extra", {}).get("family")
    return row["protocol"] + (f"/{family}" if family else "")


def metrics_text(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def table(rows: list[dict], title: str) -> Table:
    out = Table(title=title, title_justify="left")
    for column in ("dataset", "split", "protocol", "modality", "metrics", "encoder"):
        out.add_column(column, overflow="fold")
    for row in rows:
        encoder = row["encoder"]
        out.add_row(row["dataset"], row["split"], label(row), row["modality"], metrics_text(row["metrics"]),
                    f"{encoder['method']} {Path(encoder['checkpoint']).parent.name or encoder['checkpoint']} "
                    f"step {encoder['step']}")
    return out


def print_rows(rows: list[Row], console: Console | None = None) -> None:
    console = console or Console()
    plain = [dataclasses.asdict(r) for r in rows]
    console.print(table(plain, "avtools eval"))
    settings = {json.dumps(r["settings"], sort_keys=True) for r in plain}
    for text in sorted(settings):
        console.print("[dim]settings:[/] " + text, soft_wrap=True)


def save(rows: list[Row], path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"rows": [dataclasses.asdict(r) for r in rows], **meta}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    tmp.replace(path)


def compare(paths: list[Path], console: Console | None = None) -> Table:
    """One line per (dataset, split, protocol, modality), one column per results file: the paper's table."""
    console = console or Console()
    columns, cells, order = [], {}, []
    for path in paths:
        try:
            rows = json.loads(Path(path).read_text())["rows"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not an avtools results.json ({exc})") from None
        name = _column_name(path, rows)
        columns.append(name)
        for row in rows:
            key = (row["dataset"], row["split"], label(row), row["modality"])
            if key not in cells:
                order.append(key)
            cells.setdefault(key, {})[name] = metrics_text(row["metrics"])
    out = Table(title="avtools eval --compare", title_justify="left")
    for column in ("dataset", "split", "protocol", "modality", *columns):
        out.add_column(column, overflow="fold")
    for key in order:
        out.add_row(*key, *(cells[key].get(c, "-") for c in columns))
    console.print(out)
    return out


def _column_name(path: Path, rows: list[dict]) -> str:
    if rows:
        encoder = rows[0]["encoder"]
        return f"{encoder['method']} ({Path(path).parent.name or path})"
    return str(path)
