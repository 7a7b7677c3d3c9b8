"""Stage 1, reading the upload: bytes to a windowed grayscale `Study` (DICOM and common raster formats)."""
