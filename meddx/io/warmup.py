"""Imported by the fork server of `meddx.io.bounded`: one tiny PNG and one tiny DICOM read there once, so
that Pillow's and pydicom's first-use set-up (plugin and decoder registries) is done before any reader is
forked, not again in every reader (about 40 ms each)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from meddx.io import load_study


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _tiny_dicom() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64 * 64, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def warm_up() -> None:
    """Read one tiny PNG and one tiny DICOM."""
    load_study(_tiny_png())
    load_study(_tiny_dicom())


warm_up()
