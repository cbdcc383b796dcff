"""Evaluation: features from frozen encoders, then one protocol per file."""
