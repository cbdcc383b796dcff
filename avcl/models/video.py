"""Video backbones: R3D, R(2+1)D (torchvision's `VideoResNet` layout), C3D and `r2plus1d_vcop` (VCOP's and
TCGL's own R(2+1)D, their layout and key names).

State-dict keys and shapes match torchvision's `r3d_18` / `r2plus1d_18` exactly (pinned in the tests), so their
published Kinetics checkpoints load; `r3d_10` / `r2plus1d_10` are the same networks with one block per stage.
`r2plus1d_18_xdc` is XDC's variant of it (other middle widths, BatchNorm eps). `r2plus1d_vcop` is the network of VCOP's and TCGL's `models/r21d.py` with `layer_sizes=(1,1,1,1)`: a factorised
(2+1)D stem, 1x1x1 factorised shortcuts, biasless convolutions, 14.37 M parameters; its numbers compare with the
VCOP/PRP/TCGL R(2+1)D rows. `width` scales every channel count (64 is the published network) so tests can build tiny ones.
Every backbone has `features(x) -> [B, C, T', H', W']` (the conv5 map) and `forward(x)` (pooled, then `fc` when
built with classes), and `out_dim`.
"""
from __future__ import annotations

from torch import nn

from avcl.registry import Registry

BACKBONES = Registry("backbone", package="avcl.models")


class Conv2Plus1D(nn.Sequential):
    """A 3x3x3 convolution factorised into 1x3x3 spatial (+BN+ReLU) then 3x1x1 temporal (Tran et al. 2018)."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False))


def _mid(cin: int, cout: int) -> int:
    """The middle width that gives a (2+1)D convolution the parameters of a 3x3x3 one."""
    return (cin * cout * 27) // (cin * 9 + 3 * cout)


class BasicBlock(nn.Module):
    def __init__(self, conv, cin: int, cout: int, stride: int = 1, own_mid: bool = False):
        """`own_mid`: each (2+1)D convolution sizes its middle from its own channels (XDC's network); else both
        use the block's first (torchvision's), which differs in the first block of layers 2-4."""
        super().__init__()
        mid = _mid(cin, cout)
        self.conv1 = nn.Sequential(conv(cin, cout, mid, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(cout, cout, _mid(cout, cout) if own_mid else mid, 1), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


def _simple(cin: int, cout: int, mid: int, stride: int) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _r3d_stem(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                         nn.BatchNorm3d(width), nn.ReLU(inplace=True))


def _r2plus1d_stem(width: int) -> nn.Sequential:
    mid = max(1, round(45 * width / 64))  # torchvision's fixed 45 at width 64
    return nn.Sequential(nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                         nn.Conv3d(mid, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
                         nn.BatchNorm3d(width), nn.ReLU(inplace=True))


class VideoResNet(nn.Module):
    """3D ResNet with BasicBlocks; `factorised` picks R(2+1)D convolutions and stem."""

    def __init__(self, layers=(2, 2, 2, 2), factorised: bool = False, width: int = 64, num_classes: int = 0,
                 own_mid: bool = False):
        super().__init__()
        conv = Conv2Plus1D if factorised else _simple
        self.stem = (_r2plus1d_stem if factorised else _r3d_stem)(width)
        widths = [width, width * 2, width * 4, width * 8]
        cin = width
        for stage, (blocks, cout) in enumerate(zip(layers, widths), start=1):
            stride = 1 if stage == 1 else 2
            stage_blocks = [BasicBlock(conv, cin, cout, stride, own_mid)] + [BasicBlock(conv, cout, cout, 1, own_mid)
                                                                             for _ in range(blocks - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))
            cin = cout
        self.out_dim = cin
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        init_like_torchvision(self)

    def features(self, x):
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.avgpool(self.features(x)).flatten(1))


class C3D(nn.Module):
    """C3D with BatchNorm and a global average pool (VCOP/TCGL's layout and key names: conv1, bn1, ..., linear).

    Temporal pooling halves T three times, so inputs need at least 8 frames.
    """

    STAGES = (("1", 1, (1, 2, 2)), ("2", 2, (2, 2, 2)), ("3a", 4, None), ("3b", 4, (2, 2, 2)), ("4a", 8, None),
              ("4b", 8, (2, 2, 2)), ("5a", 8, None), ("5b", 8, None))

    def __init__(self, width: int = 64, num_classes: int = 0):
        super().__init__()
        cin = 3
        for name, multiple, _ in self.STAGES:
            setattr(self, f"conv{name}", nn.Conv3d(cin, width * multiple, 3, padding=1))
            setattr(self, f"bn{name}", nn.BatchNorm3d(width * multiple))
            cin = width * multiple
        self.relu = nn.ReLU(inplace=True)
        self.pools = nn.ModuleDict({name: nn.MaxPool3d(pool, pool) for name, _, pool in self.STAGES if pool})
        self.out_dim = cin
        self.pool5 = nn.AdaptiveAvgPool3d(1)
        self.linear = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        init_like_torchvision(self)

    def features(self, x):
        for name, _, pool in self.STAGES:
            x = self.relu(getattr(self, f"bn{name}")(getattr(self, f"conv{name}")(x)))
            if pool:
                x = self.pools[name](x)
        return x

    def forward(self, x):
        return self.linear(self.pool5(self.features(x)).flatten(1))


def _vcop_mid(cin: int, cout: int, kernel: tuple[int, int, int]) -> int:
    kt, kh, kw = kernel
    return (kt * kh * kw * cin * cout) // (kh * kw * cin + kt * cout)


class SpatioTemporalConv(nn.Module):
    """VCOP's factorised convolution: (1, kh, kw) spatial conv + BN + ReLU, then (kt, 1, 1) temporal conv."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = (_triple(v) for v in (kernel, stride, padding))
        mid = _vcop_mid(cin, cout, (kt, kh, kw))
        self.spatial_conv = nn.Conv3d(cin, mid, (1, kh, kw), stride=(1, sh, sw), padding=(0, ph, pw), bias=False)
        self.bn = nn.BatchNorm3d(mid)
        self.relu = nn.ReLU()
        self.temporal_conv = nn.Conv3d(mid, cout, (kt, 1, 1), stride=(st, 1, 1), padding=(pt, 0, 0), bias=False)

    def forward(self, x):
        return self.temporal_conv(self.relu(self.bn(self.spatial_conv(x))))


class SpatioTemporalResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool = False):
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.downsampleconv = SpatioTemporalConv(cin, cout, 1, stride=2)
            self.downsamplebn = nn.BatchNorm3d(cout)
        self.conv1 = SpatioTemporalConv(cin, cout, 3, stride=2 if downsample else 1, padding=1)
        self.bn1 = nn.BatchNorm3d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = SpatioTemporalConv(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(cout)
        self.outrelu = nn.ReLU()

    def forward(self, x):
        residual = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.downsample:
            x = self.downsamplebn(self.downsampleconv(x))
        return self.outrelu(x + residual)


class SpatioTemporalResLayer(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, downsample: bool = False):
        super().__init__()
        self.block1 = SpatioTemporalResBlock(cin, cout, downsample)
        self.blocks = nn.ModuleList(SpatioTemporalResBlock(cout, cout) for _ in range(blocks - 1))

    def forward(self, x):
        x = self.block1(x)
        for block in self.blocks:
            x = block(x)
        return x


class R2Plus1DVCOP(nn.Module):
    """VCOP/TCGL's R2Plus1DNet: conv1 (3x7x7 factorised, stride (1,2,2)), conv2-conv5, average pool, `linear`."""

    def __init__(self, layers=(1, 1, 1, 1), width: int = 64, num_classes: int = 0):
        super().__init__()
        self.conv1 = SpatioTemporalConv(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        self.bn1 = nn.BatchNorm3d(width)
        self.relu1 = nn.ReLU()
        widths = [width, width * 2, width * 4, width * 8]
        cin = width
        for stage, (blocks, cout) in enumerate(zip(layers, widths), start=2):
            setattr(self, f"conv{stage}", SpatioTemporalResLayer(cin, cout, blocks, downsample=stage > 2))
            cin = cout
        self.out_dim = cin
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.linear = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        init_like_torchvision(self)

    def features(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def forward(self, x):
        return self.linear(self.pool(self.features(x)).flatten(1))


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value, value)


def init_like_torchvision(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


_DEPTHS = {"10": (1, 1, 1, 1), "18": (2, 2, 2, 2), "34": (3, 4, 6, 3)}
for _depth, _layers in _DEPTHS.items():
    BACKBONES.register(f"r3d_{_depth}")(
        lambda width=64, num_classes=0, _l=_layers: VideoResNet(_l, False, width, num_classes))
    BACKBONES.register(f"r2plus1d_{_depth}")(
        lambda width=64, num_classes=0, _l=_layers: VideoResNet(_l, True, width, num_classes))
BACKBONES.register("c3d")(C3D)
BACKBONES.register("r2plus1d_vcop")(R2Plus1DVCOP)


@BACKBONES.register("r2plus1d_18_xdc")
def r2plus1d_18_xdc(width: int = 64, num_classes: int = 0) -> VideoResNet:
    """XDC's R(2+1)D-18 (HumamAlwassel/XDC, model/r2plus1d_18.py): torchvision's keys, but every (2+1)D
    convolution sizes its own middle (layers 2-4 block 0 conv2: 288/576/1152 channels, not 230/460/921), and
    BatchNorm with eps 1e-3 and momentum 0.9 (Caffe2's, as that file sets them)."""
    model = VideoResNet((2, 2, 2, 2), True, width, num_classes, own_mid=True)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps, module.momentum = 1e-3, 0.9
    return model
