"""Figures are files: matplotlib's pyplot on the Agg backend, imported only when a figure is drawn."""
from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
