"""Self-supervised methods by name: `avcl.methods.build("temporal-av", config)`, `avcl.methods.names()`.

Each method is one file, readable top to bottom: its config dataclass (every reconstructed choice a field), its
modules, and `forward(batch) -> (loss, terms)` on a batch from `avcl.data.augment.DeviceAugment`.
"""
from avcl.methods.base import METHODS, Method, build, default_config

names = METHODS.names

__all__ = ["Method", "build", "default_config", "names"]
