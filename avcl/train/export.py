"""`avtools export RUN`: the video and audio encoders alone, as torchvision-layout state_dicts."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import avcl.methods as methods
from avcl.train import checkpoint
from avcl.train.config import from_dict


def export(run_dir: Path, which: str = "last", out: Path | None = None) -> list[Path]:
    """Write OUT/{video,audio}_encoder.pt (plain state_dicts) and OUT/export.json (config, step); returns paths."""
    saved = checkpoint.load(run_dir / f"{which}.pt")
    values = {k: v for k, v in saved["config"].items() if k != "method_name"}
    config = from_dict(saved["method_name"], values)
    method = methods.build(config.method_name, config.method)
    method.load_state_dict(saved["model"])
    out = out or run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, encoder in method.encoders().items():
        path = out / f"{name}_encoder.pt"
        torch.save({k: v.contiguous() for k, v in encoder.state_dict().items()}, path)
        written.append(path)
    info = {"run": str(run_dir), "checkpoint": f"{which}.pt", "step": saved["state"]["step"],
            "method": config.method_name, "backbones": {"video": config.method.video_backbone,
                                                        "audio": getattr(config.method, "audio_backbone", None)},
            "width": config.method.width, "config": saved["config"]}
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return written + [out / "export.json"]
