"""avtools: build audio-visual datasets as WebDataset shards, then train and evaluate with the avcl engine."""
__version__ = "0.1.0"
