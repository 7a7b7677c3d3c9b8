"""Real DICOM files built with pydicom, for tests that need one (identifiers planted on purpose)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

PLANTED_IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN98765",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC55555",
    "InstitutionName": "St Example Hospital",
}


def chest_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int = 1,
    modality: str = "DX",
    sop_class: UID = DigitalXRayImageStorageForPresentation,
    identifiers: dict[str, str] = PLANTED_IDENTIFIERS,
    **tags: object,
) -> Dataset:
    """An uncompressed PA chest data set holding ``pixels`` (colour when the last axis is 3), identifiers
    planted, and any further ``tags``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword, value in identifiers.items():
        setattr(ds, keyword, value)
    ds.Modality = modality
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    samples = 3 if pixels.ndim == (4 if frames > 1 else 3) else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if samples == 3 else pixels.shape[-2:]
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def write_dicom(path: Path, pixels: np.ndarray | None = None, *, view_position: str = "PA") -> Path:
    """A 12-bit MONOCHROME2 CR chest film with planted identifiers; a bright square in the middle."""
    if pixels is None:
        pixels = np.full((256, 224), 600, np.uint16)
        pixels[96:160, 80:144] = 3500
    ds = chest_dataset(
        pixels.astype(np.uint16), bits_stored=12, modality="CR", sop_class=ComputedRadiographyImageStorage
    )
    ds.ViewPosition = view_position
    ds.save_as(path, enforce_file_format=True)
    return path
