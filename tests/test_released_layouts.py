"""Released checkpoints load exactly as their authors saved them: for each format, a random state_dict in the
layout tests/data/released_layouts.json records from the authors' code (nesting, key names, shapes, eps) is
saved the way their code saves it, loaded through `--checkpoint-format`, and every tensor must land."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avcl.eval.encoders import load_encoders
from avcl.train import checkpoint
from avcl.train.checkpoint import CheckpointError
from avtools.cli import app
from tests.test_eval import demo_dataset  # noqa: F401 (a fixture)

DATA = Path(__file__).parent / "data"
LAYOUTS = json.loads((DATA / "released_layouts.json").read_text())
TORCHVISION = json.loads((DATA / "torchvision_video_resnets.json").read_text())


def bn(name: str, channels: int) -> dict[str, list[int]]:
    return {f"{name}.{p}": [channels] for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": []}


def video_layout(video: dict) -> dict[str, list[int]]:
    """torchvision's r2plus1d_18 keys and shapes, with the authors' middle widths where theirs differ."""
    shapes = {key: shape for key, shape in TORCHVISION[video["base"]]["state_dict"] if not key.startswith("fc.")}
    for conv, (channels, middle) in video["middle_widths"].items():
        shapes[f"{conv}.0.0.weight"] = [middle, channels, 1, 3, 3]
        shapes |= bn(f"{conv}.0.1", middle)
        shapes[f"{conv}.0.3.weight"] = [channels, middle, 3, 1, 1]
    if video["fc"]:
        shapes |= {"fc.weight": video["fc"], "fc.bias": video["fc"][:1]}
    return shapes


def resnet9_layout(audio: dict) -> dict[str, list[int]]:
    """torchvision's ResNet(BasicBlock, [1, 1, 1, 1]) with a 1-channel conv1."""
    shapes = {"conv1.weight": [64, 1, 7, 7], **bn("bn1", 64)}
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        block = f"layer{stage}.0"
        shapes |= {f"{block}.conv1.weight": [cout, cin, 3, 3], **bn(f"{block}.bn1", cout),
                   f"{block}.conv2.weight": [cout, cout, 3, 3], **bn(f"{block}.bn2", cout)}
        if cin != cout:
            shapes |= {f"{block}.downsample.0.weight": [cout, cin, 1, 1], **bn(f"{block}.downsample.1", cout)}
        cin = cout
    if audio["fc"]:
        shapes |= {"fc.weight": audio["fc"], "fc.bias": audio["fc"][:1]}
    return shapes


def random_tensor(key: str, shape: list[int]) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.tensor(1000)
    if key.endswith("running_var"):
        return torch.rand(shape) + 0.5
    return torch.randn(shape)


def released_file(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Save a random checkpoint in `name`'s released layout at `path`; returns its flat weights by key."""
    layout = LAYOUTS[name]
    video = layout["video"]
    shapes = {video["prefix"] + k: s for k, s in video_layout(video).items()}
    if layout["audio"]:
        shapes |= {layout["audio"]["prefix"] + k: s for k, s in resnet9_layout(layout["audio"]).items()}
    shapes |= layout["heads"]
    weights = {key: random_tensor(key, shape) for key, shape in shapes.items()}
    state = {layout["nesting"]["prefix"] + k: v for k, v in weights.items()}
    outer = layout["nesting"]["outer"]
    if outer is None:
        torch.save(state, path)
        return weights
    extras = {"optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]}, "epoch": 100,
              "lr_scheduler": {"last_epoch": 100}, "dist": "env://", "selflabels": torch.zeros(8, 10, dtype=torch.long),
              "args": argparse.Namespace(aud_sample_rate=24000, z_normalize=True, vid_base_arch="r2plus1d_18")}
    torch.save({key: state if key == "model" else extras[key] for key in outer}, path)
    return weights


@pytest.mark.parametrize("name", ["xdc", "gdt", "selavi"])
def test_a_released_layout_loads_strictly_with_every_tensor_landed(name, tmp_path):
    torch.manual_seed(0)
    weights = released_file(name, tmp_path / f"{name}.pth")
    encoders = load_encoders(str(tmp_path / f"{name}.pth"), checkpoint_format=name)
    layout, method = LAYOUTS[name], encoders.method
    landed = {layout["video"]["prefix"] + k: v for k, v in method.video.state_dict().items()}
    if method.audio is not None:
        landed |= {layout["audio"]["prefix"] + k: v for k, v in method.audio.state_dict().items()}
    dropped = set(weights) - set(landed)
    assert all(k.endswith("fc.weight") or k.endswith("fc.bias") or k in layout["heads"] for k in dropped), dropped
    assert set(landed) <= set(weights)  # nothing left at random init
    for key, value in landed.items():
        assert torch.equal(value, weights[key]), key
    eps = {m.eps for m in method.video.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert eps == {layout["bn_eps"]}
    with torch.no_grad():
        assert method.video.eval()(torch.randn(1, 3, 8, 112, 112)).shape == (1, 512)
        if method.audio is not None:
            assert method.audio.eval()(torch.randn(1, 1, 40, 99)).shape == (1, 512)
    assert (method.audio is None) == (layout["audio"] is None)


def test_xdc_middle_widths_are_its_own():
    shapes = video_layout(LAYOUTS["xdc"]["video"])
    assert [shapes[f"layer{i}.0.conv2.0.0.weight"][0] for i in (2, 3, 4)] == [288, 576, 1152]
    torchvision = dict(TORCHVISION["r2plus1d_18"]["state_dict"])
    assert [torchvision[f"layer{i}.0.conv2.0.0.weight"][0] for i in (2, 3, 4)] == [230, 460, 921]


def test_a_training_checkpoint_with_args_loads_and_an_arbitrary_pickle_is_refused(tmp_path):
    released_file("gdt", tmp_path / "gdt.pth")
    assert isinstance(checkpoint.load(tmp_path / "gdt.pth")["args"], argparse.Namespace)
    torch.save({"model": {}, "args": Path("/etc")}, tmp_path / "other.pth")  # a class outside the allowed records
    with pytest.raises(CheckpointError, match="holds code or objects avtools does not load"):
        checkpoint.load(tmp_path / "other.pth")


def test_a_released_format_evaluates_with_its_authors_inputs_unless_told_otherwise(tmp_path):
    released_file("gdt", tmp_path / "gdt.pth")
    own = load_encoders(str(tmp_path / "gdt.pth"), checkpoint_format="gdt")
    assert tuple(own.config.video.mean) == (0.45,) * 3 and tuple(own.config.video.std) == (0.225,) * 3
    assert own.config.data.frames == 30 and own.config.video.size == 112
    assert (own.config.mel.frontend, own.config.mel.sample_rate, own.config.mel.n_mels) == ("logfbank", 24000, 40)
    assert own.describe["inputs"] == {"preset": "gdt", "format": "gdt", "own": True}
    other = load_encoders(str(tmp_path / "gdt.pth"), checkpoint_format="gdt", preset="kinetics")
    assert other.describe["inputs"] == {"preset": "kinetics", "format": "gdt", "own": False}


def test_audio_at_another_rate_than_the_formats_own_is_refused(demo_dataset, tmp_path):
    """GDT's audio network expects 24 kHz filterbanks; the demo shards hold 16 kHz audio."""
    released_file("gdt", tmp_path / "gdt.pth")
    result = CliRunner().invoke(app, ["eval", "demo", "--data", str(demo_dataset), "--checkpoint",
                                      str(tmp_path / "gdt.pth"), "--checkpoint-format", "gdt", "--protocol", "knn",
                                      "--modality", "audio", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "holds audio at 16000 Hz, but gdt's audio front end expects 24000 Hz: rebuild the dataset with " \
           "--audio-rate 24000" in " ".join(result.output.split())


def test_a_released_file_without_its_format_names_the_formats_it_fits(tmp_path):
    released_file("gdt", tmp_path / "gdt.pth")
    with pytest.raises(CheckpointError, match="Its keys fit --checkpoint-format gdt or selavi"):
        load_encoders(str(tmp_path / "gdt.pth"))
