"""Audio backbones on log-mel spectrograms [B, 1, mels, frames].

- `resnet18_2d`: torchvision's ResNet-18 layout (conv1/bn1/layer1-4/fc keys) with a 1-channel stem.
- `resnet9_2d`: the same with one block per stage, GDT's and SeLaVi's audio network (their `resnet9`).
- `conv2d_10`: AVID-CMA's 10-layer audio network (conv1 + four non-residual two-conv blocks, global max pool),
  with its key names (conv1.0, block1.conv1, ...) so AVID checkpoints load.
Both have `features(x) -> [B, C, F', T']`, `forward(x)` (pooled, `fc` when built with classes) and `out_dim`.
"""
from __future__ import annotations

from torch import nn

from avcl.models.video import BACKBONES, init_like_torchvision


class PlainBlock2d(nn.Module):
    """Two 3x3 conv + BN + ReLU layers without a shortcut (AVID's Basic2DBlock)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class ResBlock2d(PlainBlock2d):
    """torchvision's BasicBlock: the same two convolutions, the second's ReLU after adding the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, stride)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + residual)


class AudioResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), width: int = 64, num_classes: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = width
        for stage, blocks in enumerate(layers, start=1):
            cout = width * 2 ** (stage - 1)
            stride = 1 if stage == 1 else 2
            stage_blocks = [ResBlock2d(cin, cout, stride)] + [ResBlock2d(cout, cout) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))
            cin = cout
        self.out_dim = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        init_like_torchvision(self)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.avgpool(self.features(x)).flatten(1))


class Conv2D10(nn.Module):
    def __init__(self, width: int = 64, num_classes: int = 0):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True))
        self.block1 = PlainBlock2d(width, width, 2)
        self.block2 = PlainBlock2d(width, width * 2, 2)
        self.block3 = PlainBlock2d(width * 2, width * 4, 2)
        self.block4 = PlainBlock2d(width * 4, width * 8)
        self.out_dim = width * 8
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(self.out_dim, num_classes) if num_classes else nn.Identity()
        init_like_torchvision(self)

    def features(self, x):
        return self.block4(self.block3(self.block2(self.block1(self.conv1(x)))))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


BACKBONES.register("resnet18_2d")(lambda width=64, num_classes=0: AudioResNet((2, 2, 2, 2), width, num_classes))
BACKBONES.register("resnet9_2d")(lambda width=64, num_classes=0: AudioResNet((1, 1, 1, 1), width, num_classes))
BACKBONES.register("conv2d_10")(Conv2D10)
