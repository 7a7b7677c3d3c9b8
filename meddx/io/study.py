"""`Study`: one film as read, 8-bit grayscale, with its non-identifying `ImageInfo` and reading warnings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageInfo:
    """Non-identifying facts about the file; every field is always present (None when unknown)."""

    source_format: str
    width: int
    height: int
    bits_stored: int
    modality: str | None = None
    view_position: str | None = None
    photometric_interpretation: str | None = None
    pixel_spacing: list[float] | None = None
    body_part: str | None = None
    frames: int = 1
    transfer_syntax: str | None = None

    @classmethod
    def of(cls, source_format: str, pixels: np.ndarray, **facts) -> ImageInfo:
        """The info of a decoded image: its format, its size from ``pixels`` and the other facts."""
        return cls(source_format, int(pixels.shape[1]), int(pixels.shape[0]), **facts)

    def to_dict(self) -> dict:
        """The JSON object (``"image"`` in a result): every field, in this order."""
        return asdict(self)


@dataclass(frozen=True)
class Demographics:
    """The DICOM header's patient age and sex, only to compare with the notes; never in a result or a log.

    Attributes:
        age: PatientAge as stored when well formed (``"045Y"``: three digits and D, W, M or Y), else None.
        sex: PatientSex when ``"M"``, ``"F"`` or ``"O"``, else None.
    """

    age: str | None = None
    sex: str | None = None

    @property
    def age_years(self) -> float | None:
        """``age`` in years (``"018M"`` is 1.5), or None."""
        if self.age is None:
            return None
        per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[self.age[3]]
        return int(self.age[:3]) / per_year

    def __repr__(self) -> str:  # never printed by accident, e.g. in a traceback's locals
        return "Demographics(...)"


@dataclass(frozen=True, eq=False)
class DicomSource:
    """What a DICOM Structured Report about this film must carry from it, and nothing else.

    ``attributes`` maps DICOM keywords to the source's values: the SOP class and the study, series and SOP
    instance UIDs the SR references, and the Patient and General Study module attributes of Type 1 and 2
    that an SR in the same study must repeat (PatientName, PatientID, PatientBirthDate, PatientSex,
    StudyDate, StudyTime, StudyID, AccessionNumber, ReferringPhysicianName), with SpecificCharacterSet to
    encode them, Modality, Rows, Columns and PatientOrientation (for a Secondary Capture of the overlay).
    These are identifiers: only `meddx.interop` reads them, to write DICOM; they never enter a result, a
    report, a log or a repr.
    """

    attributes: dict

    @property
    def study_uid(self) -> str:
        return self.attributes["StudyInstanceUID"]

    @property
    def series_uid(self) -> str:
        return self.attributes["SeriesInstanceUID"]

    @property
    def sop_instance_uid(self) -> str:
        return self.attributes["SOPInstanceUID"]

    @property
    def sop_class_uid(self) -> str:
        return self.attributes["SOPClassUID"]

    def __repr__(self) -> str:  # never printed by accident, e.g. in a traceback's locals
        return "DicomSource(...)"


@dataclass
class Study:
    """One loaded image, ready for the model and for display.

    Attributes:
        pixels: 2-D uint8 grayscale array (height, width) after windowing, LUTs, inversion and EXIF
            orientation: what a radiologist would see.
        info: Non-identifying facts only (`ImageInfo`).
        warnings: Human-readable, non-identifying notes about how the file was read.
        demographics: a DICOM's patient age and sex (`Demographics`), to be compared with the notes only.
        source: a DICOM's references and the header an SR must repeat (`DicomSource`), for
            `meddx.interop` only; None for other formats or when the file lacks valid UIDs.
    """

    pixels: np.ndarray
    info: ImageInfo
    warnings: list[str] = field(default_factory=list)
    demographics: Demographics | None = field(default=None, repr=False)
    source: DicomSource | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """The image size as (width, height)."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    def to_pil(self, mode: str = "RGB") -> Image.Image:
        """Return the pixels as a Pillow image in `mode` ("RGB" for the model, "L" for grayscale)."""
        image = Image.fromarray(self.pixels)
        return image if mode == "L" else image.convert(mode)
