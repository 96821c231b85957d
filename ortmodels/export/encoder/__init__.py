"""Sentence encoders: export through optimum, pooling from the checkpoint, int8 with smoothing."""
