"""Training a head: labelled data sets, the image-embedding cache, fitting, calibration and metrics."""
