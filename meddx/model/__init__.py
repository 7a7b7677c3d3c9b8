"""Stage 2, the model: spec resolution and download, the encoder, its tower split, the finding vocabulary,
zero-shot scoring from prompt ensembles and the optional trained head."""
