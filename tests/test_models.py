"""Backbones: torchvision-identical layouts, shapes, gradients, the registry."""
import json
from pathlib import Path

import pytest
import torch

from avcl import models
from avcl.registry import UnknownName

TORCHVISION = json.loads((Path(__file__).parent / "data" / "torchvision_video_resnets.json").read_text())
VIDEO = ["c3d", "r2plus1d_10", "r2plus1d_18", "r2plus1d_34", "r3d_10", "r3d_18", "r3d_34", "r2plus1d_vcop", "r2plus1d_18_xdc"]
AUDIO = ["conv2d_10", "resnet18_2d", "resnet9_2d"]


def layout(model: torch.nn.Module) -> list:
    return [[key, list(value.shape)] for key, value in model.state_dict().items()]


@pytest.mark.parametrize("name, parameters", [("r3d_18", 33_371_472), ("r2plus1d_18", 31_505_325)])
def test_published_resnets_match_torchvision(name, parameters):
    """Keys, order and shapes equal torchvision 0.28's (dumped into tests/data), so its checkpoints load."""
    model = models.build(name, num_classes=400)
    assert sum(p.numel() for p in model.parameters()) == parameters == TORCHVISION[name]["parameters"]
    assert layout(model) == TORCHVISION[name]["state_dict"]


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_live_torchvision_state_dict_loads(name):
    video = pytest.importorskip("torchvision.models.video", exc_type=ImportError)
    reference = getattr(video, name)()
    model = models.build(name, num_classes=400)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 8, 32, 32)
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x))


def test_checkpoint_layouts_of_vcop_c3d_and_avid_audio():
    c3d = dict(layout(models.build("c3d", num_classes=101)))
    assert c3d["conv1.weight"] == [64, 3, 3, 3, 3] and c3d["bn5b.running_var"] == [512] and c3d["linear.weight"] == [101, 512]
    avid = dict(layout(models.build("conv2d_10")))
    assert avid["conv1.0.weight"] == [64, 1, 7, 7] and avid["block4.conv2.weight"] == [512, 512, 3, 3]
    resnet = dict(layout(models.build("resnet18_2d", num_classes=50)))
    assert resnet["conv1.weight"] == [64, 1, 7, 7] and resnet["layer4.1.bn2.weight"] == [512] and resnet["fc.weight"] == [50, 512]


@pytest.mark.parametrize("name", VIDEO + AUDIO)
def test_shapes_and_gradients(name):
    model = models.build(name, width=4, num_classes=5)
    x = torch.randn(2, 1, 40, 64) if name in AUDIO else torch.randn(2, 3, 8, 32, 32)
    features = model.features(x)
    assert features.shape[:2] == (2, model.out_dim) and model.out_dim == 32
    out = model(x)
    assert out.shape == (2, 5)
    out.square().sum().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
    assert all(p.grad.abs().sum() > 0 for key, p in model.named_parameters() if key.endswith("weight"))


def test_published_feature_map_sizes():
    """docs/methods.md §1.5: a 16x112x112 clip reaches conv5 as 512 x 2 x 7 x 7; a 4-frame frame-set as 1 x 7 x 7."""
    model = models.build("r3d_10").eval()
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 16, 112, 112)).shape == (1, 512, 2, 7, 7)
        assert model.features(torch.randn(1, 3, 4, 112, 112)).shape == (1, 512, 1, 7, 7)


def test_registry_lists_and_names_the_unknown():
    assert models.names() == sorted(VIDEO + AUDIO)
    with pytest.raises(UnknownName, match="unknown backbone 'r3d_50'.*r3d_18"):
        models.build("r3d_50")


def test_channels_last_keeps_the_numbers():
    model = models.build("r2plus1d_10", width=4).eval()
    audio = models.build("resnet18_2d", width=4).eval()
    x, a = torch.randn(2, 3, 8, 32, 32), torch.randn(2, 1, 40, 64)
    with torch.no_grad():
        before = model(x), audio(a)
        models.channels_last(model), models.channels_last(audio)
        assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        after = model(x), audio(a)
    for b, c in zip(before, after):
        torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5)
