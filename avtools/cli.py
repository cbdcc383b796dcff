"""The `avtools` command line: thin wrappers that parse options and call one function per command."""
from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path
from typing import Callable, List, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from avcl import storage
from avcl.errors import UserError
from avtools_manifests import ManifestError
from avcl.machine import check_device, check_precision
from avcl.progress import make_console, say
from avtools import __version__, catalog

app = typer.Typer(help="Build audio-visual datasets as WebDataset shards; train and evaluate contrastive models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
console = make_console(stderr=True)
REFUSED = (UserError, ManifestError)  # bad input, refused storage, a broken manifest: one line, exit status 2


def fail(message: str) -> NoReturn:
    """One line on stderr, `error: ...` (the message printed as it is, brackets and all), and exit status 2."""
    print_error(message)
    raise typer.Exit(2)


def print_error(message: str) -> None:
    console.print(Text.assemble(("error: ", "red"), str(message)), soft_wrap=True)


class NamesFromRegistries(TyperCommand):
    """A command whose help may say `{datasets}`, `{methods}`, `{protocols}`, `{backbones}`, `{formats}`: filled
    from the registries when the help is shown (reading them imports torch, which the CLI does not at start)."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.params:
            for kind in catalog.KINDS:
                if getattr(param, "help", None) and f"{{{kind}}}" in param.help:
                    param.help = param.help.replace(f"{{{kind}}}", catalog.listed(kind))
        super().format_help(ctx, formatter)


def command(*args, **kwargs) -> Callable:
    """`app.command` whose UserErrors (bad input, refused storage) and writes a full, read-only or size-capped
    file system refused print as one line with exit status 2; any other exception is a bug and keeps its
    traceback."""
    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*a, **kw):
            try:
                result = function(*a, **kw)
            except REFUSED as exc:
                fail(str(exc))
            except Exception as exc:
                refused = storage.storage_failure(exc)
                if refused is None:
                    raise
                fail(str(refused))
            if "avcl.runtime" in sys.modules:  # a command that ran the engine, perhaps as a torchrun rank
                from avcl.runtime import end_rank

                end_rank()
            return result
        return app.command(*args, cls=NamesFromRegistries, **kwargs)(run)
    return register


def _version(value: bool) -> None:
    if value:
        print(f"avtools {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print avtools' version and exit.")):
    pass


def checked(check: Callable[[str], str], value: str) -> str:
    """`value` if `check` accepts it, else its one-line error (which starts with the option's name)."""
    try:
        return check(value)
    except ValueError as exc:
        fail(f"--{exc}")


def positive(value: int | None, option: str, hint: str = "") -> int | None:
    if value is not None and value < 1:
        fail(f"{option} {value}: give a number of at least 1{hint}")
    return value


def results_folder(out: str | None) -> storage.RunFolder | None:
    """eval --out (a results file, local or s3://): the folder it and the figures go to, checked before any work."""
    if out is None:
        return None
    if not storage.is_remote(out) and Path(out).is_dir():
        fail(f"--out {out} is a folder: give the results file to write, e.g. {Path(out) / 'results.json'}")
    return storage.RunFolder(storage.location_folder(out), "--out")


def _workers(value: str) -> int | str:
    """--workers: auto or a number >= 0."""
    if value == "auto":
        return value
    if not value.isdigit():
        fail(f"--workers {value}: give auto or a number of processes (0: load in the main process)")
    return int(value)


def _partition(value: str) -> tuple[int, int]:
    try:
        index, parts = (int(x) for x in value.split("/"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not I/N (e.g. 0/4)")
    if not 0 <= index < parts:
        raise typer.BadParameter(f"{value!r}: need 0 <= I < N")
    return index, parts


@command("build-dataset")
def build_dataset(
    name: str = typer.Argument(..., help="Dataset: {datasets} (`avtools list datasets` says what each is)."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder, or s3://bucket/prefix (endpoint and "
                                                     "credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                                                     "AWS_SECRET_ACCESS_KEY)."),
    source: Optional[Path] = typer.Option(None, help="Local copy (ucf101, hmdb51, esc50, folder) or local mirror "
                                                     "of YouTube clips (CVDF <ytid>_<start>_<end>.mp4 or <ytid>.mp4)."),
    annotations: Optional[List[str]] = typer.Option(None, help="Annotation file(s), path or URL, instead of the "
                                                               "official ones (repeat for several)."),
    kinetics: Optional[int] = typer.Option(None, help="Kinetics release of the annotations: 400, 600 or 700 "
                                                     "(default: the dataset's own; Kinetics-Sounds is defined on 400)."),
    ks100_version: Optional[int] = typer.Option(None, help="kinetics-sounds100: the class list version, 2 "
                                                           "(default) or 1 (the same as kinetics-sounds100-v1)."),
    split: Optional[List[str]] = typer.Option(None, help="Only these splits (repeatable)."),
    classes: Optional[List[str]] = typer.Option(None, help="Only these classes (repeatable)."),
    limit: Optional[int] = typer.Option(None, help="Process at most this many clips in this run."),
    fold: int = typer.Option(1, help="UCF101/HMDB51: the official split (1-3) deciding train/test shards."),
    val_fraction: float = typer.Option(0.1, help="folder without split folders: the share of each class put in "
                                                  "val, in [0, 1) (recorded: a rerun cannot change it)."),
    fps: Optional[str] = typer.Option(None, help="Output frames per second, or `native` (each video's own rate, "
                                                  "at most --max-fps). Default: the dataset's (native for ucf101 "
                                                  "and hmdb51, 16 otherwise)."),
    max_fps: float = typer.Option(30.0, help="With --fps native: the highest rate written."),
    short_side: int = typer.Option(128, help="Output frame short side in pixels."),
    audio_rate: int = typer.Option(16000, help="Output mono audio sample rate."),
    frames: str = typer.Option("jpg", help="Frame storage: jpg (a JPEG per frame, packed in one tar member; fastest to read) or mp4 (short-GOP H.264; ~5x smaller)."),
    min_duration: Optional[float] = typer.Option(None, help="Reject clips with less media than this (seconds). "
                                                             "Default: the dataset's (0 for evaluation sets, else 2)."),
    silence_db: float = typer.Option(-60.0, help="With the audio-visual filters: reject audio whose RMS level is "
                                                 "at or below this (dBFS)."),
    av_filters: Optional[bool] = typer.Option(None, "--av-filters/--no-av-filters", help="Reject clips without an "
                                              "audio stream or with silent audio. Default: the dataset's (off for "
                                              "ucf101, hmdb51 and esc50, which keep every video of their official "
                                              "splits; on for the audio-visual datasets)."),
    samples_per_shard: int = typer.Option(500, help="Samples per tar shard."),
    workers: int = typer.Option(0, help="Parallel worker processes (0: twice the cores this process may use)."),
    clip_timeout: float = typer.Option(300.0, help="Seconds of wall clock a clip may take (fetch, decode, encode) "
                                                   "before it is recorded as a network failure and retried on a "
                                                   "rerun; every network read also times out after --socket-timeout."),
    socket_timeout: float = typer.Option(30.0, help="Seconds a network read may wait for data."),
    partition: str = typer.Option("0/1", help="Build part I of N (I/N) for SLURM arrays or indexed jobs."),
    url_template: str = typer.Option("https://www.youtube.com/watch?v={youtube_id}", help="Video URL for a "
                                     "YouTube id; point it at a mirror."),
    pad: float = typer.Option(0.25, help="Seconds downloaded on each side of a clip (the section then starts at "
                                         "the keyframe before)."),
    cookies: Optional[Path] = typer.Option(None, help="Netscape cookies file for yt-dlp (bot checks)."),
    cookies_from_browser: Optional[str] = typer.Option(None, help="Read cookies from this browser (firefox, ...)."),
    proxy: Optional[str] = typer.Option(None, help="Proxy URL for yt-dlp."),
    sleep: float = typer.Option(0.0, help="Seconds to sleep between yt-dlp's requests (HTTP 429)."),
    retries: int = typer.Option(3, help="Retries of transient failures (429, network, bot check) per clip."),
    retry_wait: float = typer.Option(5.0, help="First retry wait in seconds; doubles each retry."),
    ffmpeg: Optional[Path] = typer.Option(None, help="A system ffmpeg for yt-dlp (default: imageio-ffmpeg's)."),
    cache: Optional[Path] = typer.Option(None, help="Cache for downloaded annotations (default ~/.cache/avtools)."),
    card: bool = typer.Option(True, help="Draw card.png when the dataset is complete."),
):
    """Download, trim, filter and transcode a dataset into WebDataset shards with a ledger of every clip.

    Rerun the same command after an interruption to continue: finished shards are kept, settled clips are
    skipped, transient failures are retried. The exit status is non-zero only when the build itself fails.
    """
    from avcl.data.schema import FRAME_FORMATS
    from avtools.build import BuildOptions, build
    from avtools.progress import BuildProgress, print_summary
    from avtools.recipes import RecipeOptions, definitions
    if frames not in FRAME_FORMATS:
        fail(f"--frames {frames}: use one of {', '.join(FRAME_FORMATS)}")
    name = _ks100_name(name, ks100_version)
    local = definitions().get(name, {}).get("local", False)  # media from --source, never a mirror to fetch from
    if name == "demo" and source is None:
        from avtools.demo_media import demo_media

        source = demo_media((cache or storage.cache_dir()) / "demo-media")
    options = BuildOptions(
        dataset=name, out=out, limit=limit, samples_per_shard=samples_per_shard, partition=_partition(partition),
        card=card, clip_timeout=clip_timeout,
        recipe=RecipeOptions(source=source, annotations=list(annotations or []), kinetics=kinetics,
                             splits=list(split or []) or None, classes=list(classes or []) or None, fold=fold,
                             val_fraction=val_fraction, cache=cache),
        fetch=_fetch_options(url_template=url_template, source=None if local else source, pad=pad,
                             min_height=short_side, cookies=cookies, cookies_from_browser=cookies_from_browser,
                             proxy=proxy, sleep=sleep, retries=retries, retry_wait=retry_wait, ffmpeg=ffmpeg,
                             socket_timeout=socket_timeout),
        transcode=_transcode_settings(name, fps=_fps(fps), max_fps=max_fps, short_side=short_side,
                                      audio_rate=audio_rate, frames=frames, min_duration=min_duration,
                                      silence_db=silence_db, av_filters=av_filters),
    )
    if workers > 0:
        options.workers = workers
    result = build(options, progress=BuildProgress(console, name))
    print_summary(console, result)
    if result.interrupted:
        raise typer.Exit(130)


def _fetch_options(**given):
    from avtools.fetch import FetchOptions

    try:
        return FetchOptions(**given)
    except ValueError as exc:
        fail(str(exc))


def _ks100_name(name: str, version: int | None) -> str:
    """`kinetics-sounds100 --ks100-version 1` is kinetics-sounds100-v1."""
    if version is None:
        return name
    if name != "kinetics-sounds100":
        fail(f"--ks100-version is for kinetics-sounds100, not {name}")
    if version not in (1, 2):
        fail(f"--ks100-version {version}: the versions are 1 and 2")
    return name if version == 2 else "kinetics-sounds100-v1"


def _fps(value: str | None) -> float | str | None:
    if value is None or value == "native":
        return value
    try:
        return float(value)
    except ValueError:
        fail(f"--fps {value}: a number of frames per second or `native`")


def _transcode_settings(dataset: str, **given):
    """The dataset's own build defaults (datasets.toml), overridden by the options given on the command line."""
    from avtools.recipes import build_defaults
    from avtools.transcode import TranscodeSettings

    try:
        return TranscodeSettings(**(build_defaults(dataset) | {k: v for k, v in given.items() if v is not None}))
    except ValueError as exc:
        fail(str(exc))


@command()
def inspect(
    url: str = typer.Argument(..., help="A dataset folder or prefix (local, http(s)://, s3://), one shard, a brace "
                                        "pattern of shards (train-{000000..000009}.tar) or pipe:COMMAND."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    views: str = typer.Option(None, help="Save a PNG of the views one sample gives this method ({methods}): frames "
                                         "and log-mels, as the model sees them."),
    png: Path = typer.Option(None, help="Where --views writes its PNG (default: views-METHOD.png)."),
    preset: str = typer.Option(None, help="With --views: a named preset, as `avtools train --preset`."),
    config: Path = typer.Option(None, help="With --views: a TOML file of overrides, as `avtools train --config`."),
    set_: list[str] = typer.Option(None, "--set", help="With --views: override one key, as `avtools train --set`."),
    eval_clips: int = typer.Option(0, help="With --views: draw the N evenly spaced clips evaluation reads (speed 1, "
                                            "forward, centre crop) instead of the training views."),
):
    """Describe a dataset (counts, classes, one sample's metadata) or shards; with --views, draw a method's views."""
    from avtools.inspect import describe
    from avtools.progress import print_description

    if views:
        from avtools.views_png import save_views_png

        written = save_views_png(url, views, png or Path(f"views-{views}.png"), preset=preset, config_file=config,
                                 overrides=list(set_ or []), eval_clips=eval_clips)
        console.print(f"wrote {written}")
        return
    info = describe(url)
    if as_json:
        print(json.dumps(info, indent=1))
    else:
        print_description(make_console(), info)


@command()
def manifest(
    name: str = typer.Argument("kinetics-sounds100", help="The class list to regenerate (kinetics-sounds100)."),
    check: bool = typer.Option(False, help="Only check that the frozen files match the rule; exit 1 if not."),
):
    """Re-select Kinetics-Sounds100 v2 from its mapping table (manifests/kinetics_sounds/ks100_v2_mapping.csv)
    and rewrite, or with --check compare, the frozen list and its rejected file."""
    from avtools.ks100 import KS100, REJECTED, regenerate_ks100

    if name != "kinetics-sounds100":
        fail(f"{name}: only kinetics-sounds100 is derived by a rule; the other class lists are copied")
    changed = regenerate_ks100(write=not check)
    for relative in (KS100, REJECTED):
        state = "up to date" if relative not in changed else "differs from the rule" if check else "rewritten"
        console.print(f"manifests/{relative}: {state}")
    if check and changed:
        raise typer.Exit(1)


@command()
def train(
    method: str = typer.Option(..., help="{methods} (presets: manifests/presets/)."),
    data: list[str] = typer.Option(..., help="A training source: a dataset folder, a shard pattern "
                                             "(s3://b/ks100/train-{000000..000127}.tar), http(s)://, or "
                                             "'pipe:COMMAND ARGS' (one value, spaces and all); repeat --data for "
                                             "several; SOURCE@0.3 weights a mix."),
    out: str = typer.Option(..., help="The run folder, local or s3://bucket/prefix: config.json, last.pt / "
                                      "best.pt, metrics.jsonl, curves.png."),
    val_data: list[str] = typer.Option(None, help="Labelled validation sources for the online kNN monitor "
                                                  "(--set run.knn_every=N)."),
    config: Path = typer.Option(None, help="A TOML file of overrides: sections method, data, video, mel, optim, run."),
    preset: str = typer.Option(None, help="A named preset over the method's own: `demo` (tiny encoders, 300 "
                                          "steps, CPU-friendly; manifests/presets/named/)."),
    set_: list[str] = typer.Option(None, "--set", help="Override one key: --set optim.lr=0.05 --set method.tau=0.2"),
    epochs: int = typer.Option(None, help="Epochs (an epoch = the training sources' sample count)."),
    max_steps: int = typer.Option(None, help="Stop after this many optimiser steps instead."),
    batch_size: int = typer.Option(None, help="Global batch, split over GPUs and accumulation steps."),
    device: str = typer.Option(None, help="auto (CUDA when present), cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last.pt (or, when that cannot be "
                                             "read, its newest step_N.pt / best.pt); refused when the config "
                                             "differs in anything but steps, logging, workers or device."),
    allow_config_change: bool = typer.Option(False, help="With --resume: continue even though the config changed."),
):
    """Pre-train a method on shards; one GPU, or many with `torchrun --nproc-per-node N -m avtools train ...`.

    SIGTERM (a scheduler's preemption) or Ctrl-C stop at the next step with a checkpoint and print the command
    that continues the run; the exit status is then 128 + the signal's number."""
    from avcl.train.config import load
    from avcl.train.loop import Stopped, train as run_training

    positive(epochs, "--epochs")
    positive(max_steps, "--max-steps", " (leave it out to train for --epochs)")
    positive(batch_size, "--batch-size")
    if device is not None:
        checked(check_device, device)
    overrides = list(set_ or [])
    overrides += [f"data.train={json.dumps(data)}"]
    for key, value in (("data.val", val_data), ("run.epochs", epochs), ("run.max_steps", max_steps),
                       ("data.batch_size", batch_size), ("run.device", device)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    resolved = load(method, config, overrides, preset)
    try:
        run_training(resolved, out, resume=resume, allow_config_change=allow_config_change)
    except Stopped as stop:
        again = ["avtools", *sys.argv[1:]] + ([] if resume else ["--resume"])
        console.print(f"{stop}; continue with: {shlex.join(again)}", soft_wrap=True, markup=False)
        raise typer.Exit(128 + stop.signum) from None


@command()
def export(
    run: str = typer.Argument(..., help="A run folder written by `avtools train` (local or s3://)."),
    checkpoint: str = typer.Option("last", help="last, best or step_N."),
    out: str = typer.Option(None, help="The folder to write, local or s3:// (default RUN/export)."),
):
    """Write the video and audio encoders alone (torchvision-layout state_dicts) for use in other code."""
    from avcl.train.export import export as export_encoders

    written = export_encoders(run, checkpoint, out)
    for path in written:
        console.print(f"wrote {path}")


@command("eval", context_settings={"allow_extra_args": True})
def eval_(
    ctx: typer.Context,
    dataset: str = typer.Argument(None, help="{datasets}: the dataset dataset.json names, or folder (any data, "
                                             "labelled as yours)."),
    data: str = typer.Option(None, help="The dataset folder built by `avtools build-dataset` (local, http(s)://, "
                                        "s3://)."),
    protocol: str = typer.Option(None, help="{protocols} (default: the dataset's, linear for most; esc50 for "
                                            "esc50; fingerprint for vggsound)."),
    checkpoint: str = typer.Option("random", help="A run folder (its last.pt), a checkpoint file, an `avtools export` "
                                                  "folder, a backbone state_dict in torchvision's layout (e.g. "
                                                  "torchvision's r2plus1d_18 weights), a released checkpoint with "
                                                  "--checkpoint-format, or `random`: the method's encoders at random "
                                                  "initialisation (the floor)."),
    backbone: str = typer.Option(None, help="The backbone of a plain state_dict (default: inferred from its keys "
                                            "and shapes): {backbones}."),
    checkpoint_format: str = typer.Option(None, help="The layout of a released checkpoint: {formats}; its keys are "
                                                     "mapped onto the registered backbones."),
    method: str = typer.Option("xmodal", help="With --checkpoint random: whose encoders to build ({methods})."),
    preset: str = typer.Option(None, help="A named preset: `demo` sets short clips, few views and short schedules "
                                          "(and, with --checkpoint random, the demo's tiny encoders); `kinetics` "
                                          "(the default for outside checkpoints) their preprocessing."),
    folds: str = typer.Option(None, help="Official split(s) (folds): 1, 2, 3, a comma list or all (UCF101/HMDB51: "
                                         "default 1; ESC-50: all 5 folds)."),
    modality: str = typer.Option(None, help="video, audio, fused, a comma list or all (default: the dataset's: "
                                            "video for UCF101/HMDB51, all three for Kinetics-Sounds/VGG-Sound)."),
    set_: list[str] = typer.Option(None, "--set", help="Protocol setting: --set protocol.c_grid=[0.1,1] "
                                                       "--set protocol.views=10x3; with --checkpoint random also "
                                                       "model keys (--set method.width=16)."),
    out: str = typer.Option(None, help="Write the results file here, local or s3://bucket/.../results.json (figures "
                                       "go beside it)."),
    batch_size: int = typer.Option(16, help="Samples per batch and rank for feature extraction."),
    workers: str = typer.Option("auto", help="Loader processes per rank: auto (the cores this process may use, "
                                             "shared among the node's ranks, at most 8), or a number (0: none)."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", help="Autocast on CUDA: bf16, fp16 or fp32 (CPU runs fp32)."),
    cache_dir: Path = typer.Option(None, help="Feature cache, keyed by checkpoint hash, the data's content and the "
                                              "settings (default ~/.cache/avtools/features, or $AVTOOLS_CACHE/features)."),
    compare: list[Path] = typer.Option(None, help="Instead of evaluating: print results.json files side by side, "
                                                  "one column each (repeat, or a shell glob: --compare runs/*/x.json)."),
    baseline: str = typer.Option(None, help="With --compare: add gain columns against this column (its file, "
                                            "name or number)."),
    references: bool = typer.Option(False, help="With --compare: also the published rows that compare with yours "
                                                "(same dataset, protocol, network, input and splits; "
                                                "manifests/references.toml)."),
    all_references: bool = typer.Option(False, help="With --references: also the published rows of the same "
                                                    "dataset and protocol that do not compare, naming what differs."),
    table_format: str = typer.Option(None, "--format", help="With --compare: a table to paste into a paper, "
                                                             "markdown, latex or csv: one row per model, one column "
                                                             "per dataset/protocol/metric, published rows marked."),
):
    """Evaluate frozen or fine-tuned encoders with a published protocol; prints and saves result rows.

    Features are extracted once per checkpoint, data and settings and cached, so other classifiers cost seconds.
    Every row records how much of the official splits it covers; eval warns when that is below 100%. Under
    `torchrun --nproc-per-node N -m avtools eval ...` every rank extracts its share of the samples."""
    from avcl.eval import report

    if compare:
        files = list(compare) + [Path(p) for p in ([dataset] if dataset else []) + list(ctx.args)]
        if table_format:
            from avcl.eval.paper import paper_table

            text, warnings = paper_table(files, table_format, references)
            sys.stdout.write(text)
            for line in warnings:
                console.print(f"[yellow]{line}[/]", soft_wrap=True)
            return
        report.compare(files, make_console(), baseline, references, all_references)
        return
    if ctx.args:
        fail(f"unexpected argument(s) {' '.join(ctx.args)}: give one DATASET (or --compare results files)")
    if not dataset or not data:
        fail("give a DATASET and --data (or --compare results.json files)")
    from avcl.eval.engine import EvalOptions
    from avcl.eval.evaluate import EvalRequest, evaluate

    results = results_folder(out)
    options = EvalOptions(data=data, batch_size=positive(batch_size, "--batch-size"), workers=_workers(workers),
                          precision=checked(check_precision, precision),
                          cache_dir=cache_dir or storage.cache_dir() / "features",
                          figures_dir=results.local if results else Path("."))
    request = EvalRequest(dataset=dataset, data=data, protocol=protocol, checkpoint=checkpoint, method=method,
                          folds=folds, modality=modality, overrides=list(set_ or []),
                          device=checked(check_device, device), options=options, preset=preset, backbone=backbone,
                          checkpoint_format=checkpoint_format, command=shlex.join(["avtools", *sys.argv[1:]]))
    rows, engine = evaluate(request, log=say)
    if engine.rank != 0:
        return
    report.print_rows(rows, make_console())
    console.print(f"features: {engine.cache_hits} split(s) from the cache, {engine.cache_misses} extracted")
    if results is not None:
        name = storage.location_name(out)
        report.save(rows, results.path(name), {"request": request.as_dict(),
                                               "cache": {"hits": engine.cache_hits, "misses": engine.cache_misses}})
        results.push_all()
        console.print(f"wrote {out}")


@command()
def demo(
    out: Path = typer.Option(Path("avtools-demo"), help="Where the demo writes its data, run and results."),
    method: str = typer.Option("xmodal", help="The method to pre-train ({methods}; xmodal, the cross-modal "
                                              "baseline, learns fastest on the demo data)."),
    quick: bool = typer.Option(False, help="The test suite's shorter version: 150 steps (the same data)."),
    steps: int = typer.Option(None, help="Training steps (default 300; 150 with --quick)."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
):
    """See it work offline in minutes: synthetic audio-visual clips -> shards -> pre-training with the demo
    preset -> linear and kNN accuracy, pre-trained against the same encoders at random initialisation."""
    from avtools.demo import DemoOptions, run_demo

    options = DemoOptions.quick(out, method) if quick else DemoOptions(out=out, method=method)
    options.device = checked(check_device, device)
    if positive(steps, "--steps"):
        options.steps = steps
    run_demo(options, console)


@command("list")
def list_names(
    what: str = typer.Argument(None, help="datasets, methods, protocols, backbones, formats or recipes (default: "
                                          "all of them)."),
):
    """What can be named: the registered datasets, methods, evaluation protocols, backbones, checkpoint formats
    and dataset recipes, with one line about each. Code outside avtools registers its own through the modules or
    packages named in AVTOOLS_PLUGINS."""
    kinds = catalog.KINDS if what is None else (what,)
    if what is not None and what not in catalog.KINDS:
        fail(f"avtools list {what}: choose one of {', '.join(catalog.KINDS)}")
    out = make_console()
    for kind in kinds:
        table = Table(title=kind, show_header=False, title_justify="left")
        for name, about in catalog.table(kind).items():
            table.add_row(name, about)
        out.print(table)


def main() -> None:
    try:
        app()
    except REFUSED as exc:  # raised outside a command: help text that lists a registry with a broken plugin
        print_error(str(exc))
        sys.exit(2)
