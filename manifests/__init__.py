"""Data, not code: class lists, dataset definitions and presets, read with importlib.resources."""
