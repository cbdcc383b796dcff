"""avcl: the audio-visual contrastive learning engine (data streaming, models, methods, training, evaluation)."""
