"""`avtools demo`: the whole system on a laptop, offline: synthetic audio-visual clips -> `build-dataset folder`
-> shards -> `train --preset demo` -> `eval --protocol linear` and `knn`, pre-trained against random init.

The clips (avtools.demo_media) pair a square's motion pattern with a sound of a class timbre at each turning
point of the motion, among nuisance (sizes, colours, speeds, positions, backgrounds). Everything lands in OUT:
data/ (shards, ledger, card.png with samples and spectrograms), run/ (checkpoints, curves.png),
results-{pretrained,random}.json and demo.json (the printed table).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from avcl.storage import cache_dir
from avtools.build import BuildOptions, build
from avtools.recipes import RecipeOptions
from avtools.demo_media import demo_media
from avtools.transcode import TranscodeSettings


@dataclasses.dataclass
class DemoOptions:
    out: Path
    method: str = "xmodal"
    clips_per_class: int = 24
    steps: int = 300
    protocols: tuple[str, ...] = ("linear", "knn")
    modality: str = "video"
    device: str = "auto"
    workers: int = 2

    @classmethod
    def quick(cls, out: Path, method: str = "xmodal") -> "DemoOptions":
        """The test suite's version: half the steps, the same data and pipeline (xmodal and temporal-av still
        learn in it)."""
        return cls(out=out, method=method, steps=150)


def build_demo_data(options: DemoOptions, console: Console) -> Path:
    media = demo_media(cache_dir() / "demo-media", options.clips_per_class)
    data = options.out / "data"
    if not (data / "dataset.json").exists():
        console.print(f"[bold]1/3 build-dataset folder[/] {media} -> {data}")
        build(BuildOptions(dataset="folder", out=str(data), recipe=RecipeOptions(source=media, val_fraction=0.25),
                          transcode=TranscodeSettings(short_side=64), samples_per_shard=32, workers=options.workers))
    return data


def pretrain(options: DemoOptions, data: Path, console: Console) -> Path:
    from avcl.train.config import load
    from avcl.train.loop import train

    run = options.out / "run"
    overrides = [f"data.train={json.dumps([str(data)])}", f"run.max_steps={options.steps}",
                 f"run.device={json.dumps(options.device)}", f"data.workers={options.workers}"]
    config = load(options.method, overrides=overrides, named="demo")
    last = run / "last.pt"
    if last.exists():
        from avcl.train.checkpoint import load as load_checkpoint

        if load_checkpoint(last)["state"]["step"] >= options.steps:
            return run
    console.print(f"[bold]2/3 train --method {options.method} --preset demo[/] ({options.steps} steps) -> {run}")
    train(config, run, resume=last.exists())
    return run


def evaluate_both(options: DemoOptions, data: Path, run: Path, console: Console) -> list[dict]:
    """Linear and kNN accuracy of the pre-trained encoders and of the same encoders at random init."""
    from avcl.eval import report
    from avcl.eval.engine import EvalOptions
    from avcl.eval.evaluate import EvalRequest, evaluate

    console.print("[bold]3/3 eval --preset demo[/]: " + ", ".join(options.protocols) + ", pre-trained and random")
    table = []
    for protocol in options.protocols:
        entry = {"protocol": protocol}
        for name, checkpoint in (("pretrained", str(run)), ("random", "random")):
            request = EvalRequest(dataset="folder", data=str(data), protocol=protocol, checkpoint=checkpoint,
                                  method=options.method, modality=options.modality,
                                  device=options.device, preset="demo",
                                  options=EvalOptions(data=str(data), workers=options.workers,
                                                      cache_dir=cache_dir() / "features", figures_dir=options.out))
            rows, _ = evaluate(request, log=lambda *_: None)
            report.save(rows, options.out / f"results-{name}-{protocol}.json", {"demo": dataclasses.asdict(options)
                                                                                  | {"out": str(options.out)}})
            metric = "top1" if protocol != "knn" else "top1@k5"
            entry[name] = rows[0].metrics[metric]
            entry["metric"] = metric
        entry["gain"] = entry["pretrained"] - entry["random"]
        table.append(entry)
    return table


def run_demo(options: DemoOptions, console: Console | None = None) -> list[dict]:
    console = console or Console()
    options.out.mkdir(parents=True, exist_ok=True)
    data = build_demo_data(options, console)
    run = pretrain(options, data, console)
    table = evaluate_both(options, data, run, console)
    (options.out / "demo.json").write_text(json.dumps({"method": options.method, "steps": options.steps,
                                                       "rows": table}, indent=1) + "\n")
    show(table, options, console)
    return table


def show(table: list[dict], options: DemoOptions, console: Console) -> None:
    out = Table(title=f"avtools demo: {options.method}, {options.steps} steps, {options.modality} features "
                      f"({options.clips_per_class} clips per class)", title_justify="left")
    for column in ("protocol", "metric", "random init", "pre-trained", "gain"):
        out.add_column(column)
    for row in table:
        out.add_row(row["protocol"], row["metric"], f"{row['random']:.1f}", f"{row['pretrained']:.1f}",
                    f"{row['gain']:+.1f}")
    console.print(out)
    console.print(f"training curves: {options.out / 'run' / 'curves.png'}; samples with spectrograms: "
                  f"{options.out / 'data' / 'card.png'}; results: {options.out}/results-*.json")
