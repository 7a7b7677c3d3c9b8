"""Real DICOM files built with pydicom, for tests that need one (identifiers planted on purpose)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PLANTED_IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN98765",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC55555",
    "InstitutionName": "St Example Hospital",
}


def write_dicom(path: Path, pixels: np.ndarray | None = None, *, view_position: str = "PA") -> Path:
    """A 12-bit MONOCHROME2 CR chest film with planted identifiers; a bright square in the middle."""
    if pixels is None:
        pixels = np.full((256, 224), 600, np.uint16)
        pixels[96:160, 80:144] = 3500
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.ViewPosition = view_position
    for key, value in PLANTED_IDENTIFIERS.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
