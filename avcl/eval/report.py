"""Result rows to a rich table and results.json; `--compare` puts results files side by side, with gains
against a baseline column and the published rows that compare with them (same dataset, protocol, network,
input and splits; `reference_differences` names what else differs). `avcl.eval.paper` renders the same rows
as a Markdown, LaTeX or CSV table.

results.json: {"rows": [ResultRow...], "request": {...}, ...}. Every row names dataset, split, protocol, modality,
its metrics, the full protocol settings, the encoder (checkpoint, hash, method, step), its coverage of the
official splits and its provenance (avtools version, UTC time, command line, resolved config).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

import avtools_manifests
from avcl.errors import UserError
from avcl.eval.engine import ResultRow
from avcl.storage import write_atomic

ROW_FIELDS = ("dataset", "split", "protocol", "modality", "metrics", "settings", "encoder")


class ResultsError(UserError):
    """A file that is not an avtools results file, or a --compare request that cannot be met."""


def label(row: dict) -> str:
    extra = row.get("extra", {})
    family = extra.get("family")
    layer = extra.get("layer")
    return row["protocol"] + (f"/{family}" if family else "") + (f" ({layer})" if layer else "")


def metrics_text(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def encoder_text(encoder: dict) -> str:
    checkpoint = encoder["checkpoint"]
    where = "random" if checkpoint == "random" else (Path(checkpoint).parent.name or checkpoint)
    return f"{encoder['method']} {where} step {encoder['step']}"


def coverage_text(row: dict) -> str:
    """Samples read (or available) against those the official lists name, over the row's roles."""
    coverage = row.get("extra", {}).get("coverage") or {}
    if row["split"] == "mean":
        coverage = {f"{split}/{role}": counts for split, roles in coverage.items() for role, counts in (roles or {}).items()}
    got = sum(c.get("read", c["available"]) for c in coverage.values())
    expected = sum(c["expected"] for c in coverage.values())
    return f"{100 * got / expected:.1f}% ({got:,}/{expected:,})" if expected else "-"


def table(rows: list[dict], title: str) -> Table:
    out = Table(title=title, title_justify="left")
    for column in ("dataset", "split", "protocol", "modality", "metrics", "coverage", "encoder"):
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(row["dataset"], row["split"], label(row), row["modality"], metrics_text(row["metrics"]),
                    coverage_text(row), encoder_text(row["encoder"]))
    return out


def print_rows(rows: list[ResultRow], console: Console | None = None) -> None:
    """The result table, the settings behind it, and the published rows for the same protocol and backbone."""
    console = console or Console()
    plain = [dataclasses.asdict(r) for r in rows]
    console.print(table(plain, "avtools eval"))
    settings = {json.dumps(r["settings"], sort_keys=True) for r in plain}
    for text in sorted(settings):
        console.print("[dim]settings:[/] " + text, soft_wrap=True)
    print_references(plain, console)


def save(rows: list[ResultRow], path: Path, meta: dict) -> None:
    document = {"rows": [dataclasses.asdict(r) for r in rows], **meta}
    write_atomic(path, (json.dumps(document, indent=1) + "\n").encode())


def load_rows(path: Path) -> list[dict]:
    """The rows of an avtools results file; anything else is a ResultsError naming the file and what is wrong."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read it as JSON ({exc})") from None
    rows = document.get("rows") if isinstance(document, dict) else None
    if not isinstance(rows, list):
        raise ResultsError(f"{path}: not an avtools results file (no list of rows); pass the results.json that "
                           "`avtools eval --out` writes")
    for i, row in enumerate(rows):
        missing = [f for f in ROW_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise ResultsError(f"{path}: row {i} lacks {', '.join(missing)}: not an avtools results file; pass the "
                               "results.json that `avtools eval --out` writes")
        if not isinstance(row["metrics"], dict) or not all(isinstance(v, (int, float)) for v in row["metrics"].values()):
            raise ResultsError(f"{path}: row {i} has metrics that are not numbers")
    return rows


@dataclasses.dataclass
class Column:
    name: str
    path: Path
    rows: list[dict]


def columns(paths: list[Path]) -> list[Column]:
    """One column per file, named by run folder and step; where two would share a name, by the shortest end
    of their paths that tells them apart (the whole path, then a number, for the same file twice)."""
    loaded = [(Path(p), load_rows(p)) for p in paths]
    names = [_run_name(rows) or path.name for path, rows in loaded]
    clashing = [i for i, name in enumerate(names) if names.count(name) > 1]
    for i, short in zip(clashing, _distinct_ends([loaded[i][0] for i in clashing])):
        names[i] = short
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        names[i] = name if seen[name] == 1 else f"{name} #{seen[name]}"
    return [Column(name, path, rows) for name, (path, rows) in zip(names, loaded)]


def _distinct_ends(paths: list[Path]) -> list[str]:
    """For each path its last n parts, n the smallest that makes them distinct (all parts if none does)."""
    for n in range(1, max((len(p.parts) for p in paths), default=0) + 1):
        ends = [str(Path(*p.parts[-n:])) for p in paths]
        if len(set(ends)) == len(ends):
            return ends
    return [str(p) for p in paths]


def _run_name(rows: list[dict]) -> str | None:
    encoders = {encoder_text(r["encoder"]) for r in rows}
    return encoders.pop() if len(encoders) == 1 else None


def row_key(row: dict) -> tuple:
    return row["dataset"], row["split"], label(row), row["modality"]


def pick_baseline(baseline: str | None, cols: list[Column]) -> Column | None:
    """--baseline as a column name, a 1-based column number or a file path given to --compare."""
    if baseline is None:
        return None
    for i, col in enumerate(cols, start=1):
        if baseline in (col.name, str(i), str(col.path)) or Path(baseline) == col.path:
            return col
    listed = "; ".join(f"{i}: {c.name}" for i, c in enumerate(cols, start=1))
    raise ResultsError(f"--baseline {baseline!r} is none of the columns ({listed}); give a name, number or file")


def compare(paths: list[Path], console: Console | None = None, baseline: str | None = None,
            references: bool = False, all_references: bool = False) -> Table:
    """One line per (dataset, split, protocol, modality, metric), one column per results file, a gain column
    per other file against the baseline; warnings for protocol settings that differ between columns."""
    console = console or Console()
    cols = columns(paths)
    base = pick_baseline(baseline, cols)
    cells: dict[tuple, dict[str, float]] = {}
    settings: dict[tuple, dict[str, dict]] = {}
    for col in cols:
        for row in col.rows:
            key = row_key(row)
            settings.setdefault(key, {})[col.name] = row["settings"]
            for metric, value in row["metrics"].items():
                cells.setdefault((*key, metric), {})[col.name] = float(value)
    out = Table(title="avtools eval --compare", title_justify="left")
    gains = [c for c in cols if base is not None and c is not base]
    for column in ("dataset", "split", "protocol", "modality", "metric", *(c.name for c in cols),
                   *(f"gain {c.name} vs {base.name}" for c in gains)):
        out.add_column(column, overflow="fold")
    for key, values in cells.items():
        shown = [f"{values[c.name]:.2f}" if c.name in values else "-" for c in cols]
        delta = [f"{values[c.name] - values[base.name]:+.2f}" if c.name in values and base.name in values else "-"
                 for c in gains]
        out.add_row(*key, *shown, *delta)
    console.print(out)
    for line in settings_warnings(settings):
        console.print(f"[yellow]{line}[/]", soft_wrap=True)
    if references:
        print_references([row for col in cols for row in col.rows], console, all_references)
    return out


def settings_warnings(settings: dict[tuple, dict[str, dict]], between: str = "columns") -> list[str]:
    """A line per compared row whose protocol settings differ between `between` (columns, models), naming the
    keys."""
    lines = []
    for key, by_column in settings.items():
        flat = {name: _flatten(value) for name, value in by_column.items()}
        keys = sorted({k for f in flat.values() for k in f if len({json.dumps(g.get(k)) for g in flat.values()}) > 1})
        if keys:
            lines.append(f"warning: {' '.join(key)}: protocol settings differ between {between}: {', '.join(keys)}")
    return lines


def _flatten(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def published() -> list[dict]:
    """manifests/references.toml: the verified published rows."""
    return avtools_manifests.toml("references.toml")["reference"]


def row_backbone(row: dict) -> str | None:
    encoder = row["encoder"]
    return encoder.get("audio_backbone") if row["modality"] == "audio" else encoder.get("video_backbone")


def row_input(row: dict) -> str | None:
    """frames x crop of the row's clips, from its protocol settings (None where it has none)."""
    settings = row.get("settings") or {}
    return f"{settings['frames']}x{settings['size']}" if "frames" in settings and "size" in settings else None


def reference_differences(row: dict, ref: dict) -> list[str]:
    """The settings in which a published row differs from a result row of the same dataset and protocol: the
    network, the input (frames x crop, and RGB against residual frames), the splits, the retrieval layer.
    Empty: the two compare."""
    differ = []
    if ref["backbone"] != row_backbone(row):
        differ.append(f"network {ref['backbone']} (yours {row_backbone(row)})")
    if not ref["input"]:
        differ.append("input not stated by the source")
    elif ref["input"] != row_input(row):
        differ.append(f"input {ref['input']} (yours {row_input(row) or 'not frames x crop'})")
    if ref.get("input_modality", "rgb") != "rgb":
        differ.append(f"input modality {ref['input_modality']} (yours rgb)")
    splits = ref["splits"]
    same_split = (row["split"] == "mean") if splits.startswith("mean") else (splits == row["split"])
    if not same_split:
        differ.append(f"splits {splits} (yours {row['split']})")
    layer = row.get("extra", {}).get("layer")
    if ref.get("layer", layer) != layer:
        differ.append(f"layer {ref['layer']} (yours {layer})")
    return differ


def related_references(row: dict, refs: list[dict]) -> list[tuple[dict, list[str]]]:
    """The published rows for the row's dataset and protocol, each with the settings in which it differs."""
    return [(ref, reference_differences(row, ref)) for ref in refs
            if ref["dataset"] == row["dataset"] and ref["protocol"] == row["protocol"]]


def matching_references(row: dict, refs: list[dict]) -> list[dict]:
    """The published rows that compare with the row: same dataset, protocol, network, input and splits."""
    return [ref for ref, differ in related_references(row, refs) if not differ]


def print_references(rows: list[dict], console: Console, everything: bool = False) -> None:
    """The published rows that compare with `rows`; with `everything`, also those of the same dataset and
    protocol that do not, each with what differs."""
    refs = published()
    shown: dict[int, tuple[dict, str]] = {}
    for row in rows:
        for ref, differ in related_references(row, refs):
            if not differ:
                shown[id(ref)] = (ref, "")
            elif everything and id(ref) not in shown:
                shown[id(ref)] = (ref, "; ".join(differ))
    if not shown:
        return
    title = ("published rows for the same dataset and protocol, with what differs from your rows" if everything
             else "published rows that compare with yours: same dataset, protocol, network, input and splits")
    out = Table(title=f"{title} (manifests/references.toml)", title_justify="left")
    for column in ("method", "pretrain", "dataset", "protocol", "network", "input", "splits", "metrics",
                   *(("differs in",) if everything else ()), "source"):
        out.add_column(column, overflow="fold")
    for ref, differ in shown.values():
        out.add_row(ref["method"], ref["pretrain"], ref["dataset"], ref["protocol"] + (f" ({ref['layer']})" if "layer" in ref else ""),
                    ref["backbone"], (ref["input"] or "not stated") + (f", {ref['input_modality']}" if "input_modality" in ref else ""),
                    ref["splits"], metrics_text(ref["metrics"]), *((differ or "-",) if everything else ()),
                    f"{ref['paper']}; {ref['table']}; {ref['source']}")
    console.print(out)
