"""Backbones by name: `avcl.models.build("r2plus1d_18", width=64, num_classes=0)`, `avcl.models.names()`."""
import torch
from torch import nn

from avcl.models.video import BACKBONES

build = BACKBONES.build
names = BACKBONES.names


def channels_last(model: nn.Module) -> nn.Module:
    """Convolution weights to channels-last (3D convs: NDHWC, 2D: NHWC), in place; convolutions then keep their
    activations channels-last, which tensor cores prefer. `Module.to(memory_format=...)` cannot mix the two."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
        elif isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    return model
