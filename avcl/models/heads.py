"""Heads on pooled features: MLP projection heads."""
from __future__ import annotations

from torch import nn


def mlp(dims: list[int] | tuple[int, ...], norm: bool = True, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers through `dims` with (BatchNorm +) activation between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(cin, cout))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(cout)] if norm else []
            layers.append(activation())
    return nn.Sequential(*layers)
