"""`avtools export RUN`: the video and audio encoders alone, as torchvision-layout state_dicts."""
from __future__ import annotations

import json

import avcl.methods as methods
from avcl.storage import RunFolder, write_atomic
from avcl.train import checkpoint
from avcl.train.config import from_dict


def export(run: str, which: str = "last", out: str | None = None) -> list[str]:
    """Write OUT/{video,audio}_encoder.pt (plain state_dicts) and OUT/export.json (config, step); RUN and OUT
    local or s3://. Returns the locations written."""
    source = RunFolder(run, "RUN", create=False)
    name = f"{which}.pt"
    if not source.pull(name):
        raise checkpoint.CheckpointError(f"{source.url_of(name)}: no such checkpoint; a run folder holds last.pt, "
                                         "best.pt and the step_N.pt its run.keep_every kept")
    saved = checkpoint.load(source.path(name))
    values = {k: v for k, v in saved["config"].items() if k != "method_name"}
    config = from_dict(saved["method_name"], values)
    method = methods.build(config.method_name, config.method)
    method.load_state_dict(saved["model"])
    target = RunFolder(out or f"{source.url}/export", "--out")
    written = []
    for part, encoder in method.encoders().items():
        written.append(f"{part}_encoder.pt")
        checkpoint.save_atomic({k: v.contiguous() for k, v in encoder.state_dict().items()}, target.path(written[-1]))
    info = {"run": source.url, "checkpoint": name, "step": saved["state"]["step"],
            "method": config.method_name, "backbones": {"video": config.method.video_backbone,
                                                        "audio": getattr(config.method, "audio_backbone", None)},
            "width": config.method.width, "config": saved["config"]}
    write_atomic(target.path("export.json"), (json.dumps(info, indent=2) + "\n").encode())
    written.append("export.json")
    target.push(*written)
    return [target.url_of(name) for name in written]
