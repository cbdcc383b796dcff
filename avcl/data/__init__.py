"""Reading avtools shards: the sample schema (torch-free) and the streaming pipeline."""
