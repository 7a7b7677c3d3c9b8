"""Annotated sets of synthetic films, in the layouts of public sets (NIH, RSNA, COCO), for `explain-eval`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from meddx.dev.tiny import PLANTED_FINDING, SyntheticFilm


def write_dicom_film(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit MONOCHROME2 DX film with these gray levels (times 16) and no identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_annotated_set(
    folder: str | Path,
    films: Sequence[SyntheticFilm],
    box_format: str,
    *,
    stored_side: int | None = None,
    dicom: bool = False,
) -> tuple[Path, Path, Path]:
    """Write films with planted blobs and their boxes as a public set would: (images, boxes, findings map).

    The boxes are in the films' drawn frame; ``stored_side`` stores the PNGs resized to that side (as a
    downscaled export of a set), and the findings map names the drawn frame, so boxes must be scaled back.
    ``dicom`` stores DICOM files (``<name>.dcm``; RSNA's layout). Films without a blob get no box (RSNA:
    a Target 0 row).
    """
    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, tuple[int, int, int, int] | None, int]] = []
    for n, film in enumerate(films):
        name = f"film{n:03d}"
        side = film.pixels.shape[0]
        if dicom:
            write_dicom_film(images / f"{name}.dcm", film.pixels)
            file_name = f"{name}.dcm"
        else:
            pixels = film.pixels
            if stored_side:
                pixels = cv2.resize(pixels, (stored_side, stored_side), interpolation=cv2.INTER_AREA)
            file_name = f"{name}.png"
            cv2.imwrite(str(images / file_name), pixels)
        rows.append((file_name if box_format != "rsna" else name, film.box, side))
    labels = {"coco": "PulmonaryTuberculosis", "nih": "Nodule", "rsna": "Lung Opacity"}
    label = labels[box_format]
    side = films[0].pixels.shape[0]
    boxes = folder / ("boxes.json" if box_format == "coco" else "boxes.csv")
    if box_format == "coco":
        payload = {
            "images": [
                {"id": i, "file_name": n, "width": s, "height": s} for i, (n, _, s) in enumerate(rows)
            ],
            "categories": [{"id": 1, "name": label}],
            "annotations": [
                {"id": i, "image_id": i, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                for i, (_, b, _) in enumerate(rows)
                if b is not None
            ],
        }
        boxes.write_text(json.dumps(payload), encoding="utf-8")
    elif box_format == "nih":
        lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
        lines += [
            f"{n},{label},{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}" for n, b, _ in rows if b is not None
        ]
        boxes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        lines = ["patientId,x,y,width,height,Target"]
        lines += [
            f"{n},{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]},1" if b is not None else f"{n},,,,,0"
            for n, b, _ in rows
        ]
        boxes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = folder / "findings-map.yaml"
    mapping.write_text(f"frame: [{side}, {side}]\nlabels:\n  {label}: {PLANTED_FINDING}\n", encoding="utf-8")
    return images, boxes, mapping
