"""`avtools eval --compare FILES --format markdown|latex|csv`: results as a table a paper can print.

One row per model (method, network, pretraining data, checkpoint), one column per dataset / protocol /
modality / metric, the mean over splits where a file has it; a cell whose row read less than every sample the
official lists name carries its coverage. With `references`, the published rows that compare with a column
(same dataset, protocol, network, input and splits: `report.matching_references`) are rows of the same table,
marked as published, with a citation key. Every setting that differs between the models of a column is a
warning line, printed beside the table (never inside it).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from avcl.eval import report

FORMATS = ("markdown", "latex", "csv")


def model_of(row: dict) -> str:
    """method, network, pretraining data and checkpoint of a row's encoder, as one label."""
    encoder = row["encoder"]
    network = encoder.get("video_backbone") if row["modality"] != "audio" else encoder.get("audio_backbone")
    data = (row.get("provenance") or {}).get("config", {}).get("model", {}).get("data", {}).get("train") or []
    pretrained_on = ", ".join(Path(str(d).rstrip("/")).name for d in data) or "-"
    checkpoint = encoder["checkpoint"]
    where = "random init" if checkpoint == "random" else Path(checkpoint).name
    return f"{encoder['method']} | {network} | {pretrained_on} | {where}"


def column_of(row: dict, metric: str) -> str:
    modality = "" if row["modality"] == "video" else f" {row['modality']}"
    return f"{row['dataset']} {report.label(row)}{modality} {metric}"


def cite_key(ref: dict) -> str:
    """`xu2019` from "Xu et al., CVPR 2019"."""
    surname = re.split(r"[ ,&]", ref["paper"].strip())[0].lower()
    year = re.search(r"(19|20)\d\d", ref["paper"])
    return re.sub(r"[^a-z]", "", surname) + (year.group(0) if year else "")


def collect(paths: list[Path], references: bool) -> tuple[list[str], dict[str, dict[str, str]], list[str]]:
    """(column names, {model: {column: cell}}, warnings)."""
    loaded = [(path, report.load_rows(path)) for path in paths]
    files_of: dict[tuple, set] = {}
    for path, rows in loaded:
        for row in rows:
            files_of.setdefault((model_of(row), row["dataset"], report.label(row), row["modality"]), set()).add(path)
    twice = {key[0] for key, files in files_of.items() if len(files) > 1}  # one model measured twice the same way
    labelled = [(f"{model_of(row)} [{path.stem}]" if model_of(row) in twice else model_of(row), row)
                for path, rows in loaded for row in rows]  # ... gets a row per results file
    means = {(r["dataset"], report.label(r), r["modality"]) for _, r in labelled if r["split"] == "mean"}
    shown = [(m, r) for m, r in labelled
             if r["split"] == "mean" or (r["dataset"], report.label(r), r["modality"]) not in means]
    table: dict[str, dict[str, str]] = {}
    settings: dict[tuple, dict[str, dict]] = {}
    columns: list[str] = []
    refs = report.published() if references else []
    for model, row in shown:
        coverage = report.coverage_text(row)
        short = coverage != "-" and not coverage.startswith("100.0%")
        for metric, value in row["metrics"].items():
            column = column_of(row, metric)
            if column not in columns:
                columns.append(column)
            table.setdefault(model, {})[column] = f"{value:.1f}" + (f" (coverage {coverage.split(' ')[0]})" if short else "")
        settings.setdefault((column_of(row, "").strip(),), {})[model] = row["settings"]
        for ref in report.matching_references(row, refs):
            label = f"{ref['method']} | {ref['backbone']} | {ref['pretrain']} | published [{cite_key(ref)}]"
            for metric, value in ref["metrics"].items():
                column = column_of(row, metric)
                if column not in columns:
                    columns.append(column)
                table.setdefault(label, {})[column] = f"{value:.1f}"
    return columns, table, report.settings_warnings(settings, "models")


def render(columns: list[str], table: dict[str, dict[str, str]], fmt: str) -> str:
    header = ["method", "network", "pretrained on", "checkpoint", *columns]
    body = [[*model.split(" | "), *(cells.get(c, "-") for c in columns)] for model, cells in table.items()]
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, *body])
        return out.getvalue()
    if fmt == "latex":
        def tex(text: str) -> str:
            return re.sub(r"([&%_#$])", r"\\\1", text)
        lines = [r"\begin{tabular}{" + "l" * 4 + "r" * len(columns) + "}", r"\hline",
                 " & ".join(tex(h) for h in header) + r" \\", r"\hline",
                 *(" & ".join(tex(cell) for cell in line) + r" \\" for line in body), r"\hline", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * len(columns),
             *("| " + " | ".join(line) + " |" for line in body)]
    return "\n".join(lines) + "\n"


def paper_table(paths: list[Path], fmt: str, references: bool = False) -> tuple[str, list[str]]:
    """The table in `fmt` and its warning lines."""
    if fmt not in FORMATS:
        raise report.ResultsError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    columns, table, warnings = collect(paths, references)
    return render(columns, table, fmt), warnings
