"""Heads on pooled features: MLP projection heads and linear classifiers."""
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


class LinearClassifier(nn.Module):
    """BatchNorm without affine parameters, then one linear layer (the linear-probe head of MoCo v3 / DINO)."""

    def __init__(self, in_dim: int, classes: int, norm: bool = True, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, classes)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.norm(x)))
