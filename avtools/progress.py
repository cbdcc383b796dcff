"""What a build and `inspect` show: build progress (terminal or log), the final summary, and `inspect` tables."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from avcl.progress import Progress


class BuildProgress:
    """A build's progress: a live bar on a terminal; in a log a line per finished shard and every 30 s."""

    def __init__(self, console: Console, name: str):
        self.console, self.name = console, name
        self.progress: Progress | None = None
        self.done = 0

    def start(self, todo: int, already: int) -> None:
        self.progress = Progress(f"build {self.name}", todo).__enter__()
        if already:
            self.progress.print(f"resuming: {already} clips already settled, {todo} to do")

    def advance(self, ok: bool, counts: dict) -> None:
        self.done += 1
        self.progress.update(self.done, f"clips (ok {counts['ok']}, failed {counts['failed']}), "
                                        f"{self.progress.rate():.2f} clips/s")

    def shard(self, name: str, samples: int) -> None:
        self.progress.print(f"wrote {name} ({samples} samples)")

    def stop(self) -> None:
        self.progress.__exit__(None, None, None)


def print_summary(console: Console, result) -> None:
    info = result.summary
    table = Table(title=f"{info.name}: {'complete' if info.complete else 'incomplete'}")
    for column in ("split", "available", "failed", "total", "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for name, split in info.splits.items():
        table.add_row(name, str(split.available), str(split.failed), str(split.total), str(len(split.shards)))
    console.print(table)
    if info.folds:
        print_coverage(console, info.folds)
    if info.failures:
        console.print("failures: " + ", ".join(f"{reason} {n}" for reason, n in info.failures.items()))
    print_annotations(console, info.annotations)
    for line in result.warnings:
        console.print(f"[yellow]warning:[/] {line}", soft_wrap=True)
    rate = result.processed / result.seconds if result.seconds else 0.0
    console.print(f"this run: {result.ok} ok, {result.failed} failed in {result.seconds:.1f}s ({rate:.2f} clips/s)"
                  + (" [yellow](interrupted: rerun the same command to continue)[/yellow]" if result.interrupted else ""))
    if result.ok:
        console.print(f"time {result.stages.describe(result.ok)}", soft_wrap=True)


def print_annotations(console: Console, annotations: dict) -> None:
    """What became of annotation rows that are not clips: rejected (with file:line), other classes, repeated."""
    if annotations.get("rows_rejected"):
        console.print(f"[yellow]{annotations['rows_rejected']} annotation row(s) rejected[/] (ledger reason "
                      "bad_annotation), e.g.:", soft_wrap=True)
        for line in annotations["rejected"][:5]:
            console.print(f"  {line}", soft_wrap=True, markup=False)
    if annotations.get("rows_of_other_classes"):
        console.print(f"{annotations['rows_of_other_classes']} annotation row(s) of classes this dataset does not have")
    if annotations.get("conflicting_duplicates"):
        console.print(f"[yellow]{annotations['conflicting_duplicates']} repeated clip id(s) with another label or "
                      "split[/] (the first row kept), e.g.:", soft_wrap=True)
        for line in annotations["conflicts"][:5]:
            console.print(f"  {line}", soft_wrap=True, markup=False)


def print_coverage(console: Console, folds: dict) -> None:
    """Official splits: the videos their lists name against those in the shards."""
    table = Table(title="official splits: available / expected")
    for column in ("split", "train", "test", "coverage"):
        table.add_column(column)
    for fold, roles in folds.items():
        cells = [f"{roles[r]['available']:,} / {roles[r]['expected']:,}" if r in roles else "-" for r in ("train", "test")]
        available = sum(roles[r]["available"] for r in ("train", "test") if r in roles)
        expected = sum(roles[r]["expected"] for r in ("train", "test") if r in roles)
        table.add_row(fold, *cells, f"{100 * available / max(expected, 1):.1f}%")
    console.print(table)


def print_description(console: Console, info: dict) -> None:
    if info["kind"] == "dataset":
        table = Table(title=f"{info['name']} ({info['url']}): {'complete' if info['complete'] else 'incomplete'}")
        for column in ("split", "available", "total", "shards"):
            table.add_column(column)
        for name, split in info["splits"].items():
            table.add_row(name, str(split["available"]), str(split["total"]), str(split["shards"]))
        console.print(table)
        if info.get("folds"):
            print_coverage(console, info["folds"])
        listed = info.get("class_list") or {}
        source = f" (class list {listed['file']} {listed['version']})".replace(" )", ")") if listed else ""
        console.print(f"{len(info['classes'])} classes{source}: " + ", ".join(info["classes"][:20])
                      + (" ..." if len(info["classes"]) > 20 else ""))
        if info["failures"]:
            console.print("failures: " + ", ".join(f"{r} {n}" for r, n in info["failures"].items()))
    else:
        shards = f"{info['shards']} shards " if info['kind'] == 'shards' else 'shard '
        console.print(f"{shards}{info['url']}: {info['samples']} samples, {len(info['classes'])} classes")
        if info.get("without_json"):
            missing = info["without_json"]
            console.print(f"[yellow]{missing['count']} tar group(s) without a json member[/] (the loader skips "
                          f"them), e.g. {', '.join(missing['keys'])}", soft_wrap=True)
    if info.get("sample"):
        console.print(f"sample {info['sample']['key']}: members {', '.join(info['sample']['members'])}")
        meta = dict(info["sample"]["json"])
        if len(meta.get("frame_offsets", [])) > 4:  # one per frame: the ends tell enough here (--json has all)
            offsets = meta["frame_offsets"]
            meta["frame_offsets"] = f"[{offsets[0]}, {offsets[1]}, ..., {offsets[-1]}] ({len(offsets)} offsets)"
        console.print_json(json.dumps(meta))
