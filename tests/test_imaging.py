"""Tests for meddx.io: every file is built here, in memory or in tmp_path."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io import ACCEPTED_FORMATS, Study, load_study, sniff_format
from tests.helpers import chest_dataset

IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN123456",
    "PatientBirthDate": "19700101",
    "StudyDate": "20240102",
    "AccessionNumber": "ACC987654",
    "InstitutionName": "Saint Elsewhere General",
    "ReferringPhysicianName": "House^Gregory",
}
METADATA_KEYS = {
    "source_format",
    "width",
    "height",
    "bits_stored",
    "modality",
    "view_position",
    "photometric_interpretation",
    "pixel_spacing",
    "body_part",
    "frames",
    "transfer_syntax",
}


# --- builders ----------------------------------------------------------------------------------------


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int = 1,
    **tags: object,
) -> Dataset:
    """An uncompressed DX data set holding `pixels`, with `IDENTIFIERS` planted in it."""
    tags.setdefault("ImagerPixelSpacing", [0.139, 0.139])
    return chest_dataset(
        pixels,
        photometric=photometric,
        bits_stored=bits_stored,
        frames=frames,
        identifiers=IDENTIFIERS,
        **tags,
    )


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_dicom(pixels: np.ndarray, **kwargs: object) -> bytes:
    return to_bytes(make_dataset(pixels, **kwargs))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of every chunk in a PNG."""
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        chunks.append((offset, kind))
        offset += 12 + length
    return chunks


def two_level(value_low: int, value_high: int, dtype: type = np.uint16, size: int = 64) -> np.ndarray:
    """A dark background with a bright square in the top-left quarter."""
    pixels = np.full((size, size), value_low, dtype=dtype)
    pixels[: size // 2, : size // 2] = value_high
    return pixels


def gradient(height: int = 48, width: int = 64, high: int = 4095, dtype: type = np.uint16) -> np.ndarray:
    return np.linspace(0, high, height * width).reshape(height, width).round().astype(dtype)


def dicom_linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 'LINEAR' window onto 0..255, written out from the standard."""
    x = np.asarray(x, dtype=float)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    out[x <= center - 0.5 - (width - 1) / 2] = 0
    out[x > center - 0.5 + (width - 1) / 2] = 255
    return np.rint(out)


# --- sniffing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(24), "png"),
        (b"\xff\xd8\xff\xe0" + bytes(24), "jpeg"),
        (b"II*\x00" + bytes(24), "tiff"),
        (b"MM\x00*" + bytes(24), "tiff"),
        (b"GIF89a" + bytes(24), "gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8L" + bytes(24), "webp"),
        (b"BM" + bytes(12) + struct.pack("<I", 40) + bytes(24), "bmp"),
        (bytes(128) + b"DICM" + bytes(24), "dicom"),
        # the file's own signature first (issue 19): a PNG holding "DICM" at 128 is a PNG; a TIFF header in
        # a DICOM preamble (dual-format files) is DICOM
        (b"\x89PNG\r\n\x1a\n" + bytes(120) + b"DICM" + bytes(24), "png"),
        (b"\xff\xd8\xff\xe0" + bytes(124) + b"DICM" + bytes(24), "jpeg"),
        (b"II*\x00" + bytes(124) + b"DICM" + bytes(24), "dicom"),
        (b"BMW is a car, not a bitmap" + bytes(24), None),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', None),
        (b"%PDF-1.7\n", None),
        (b"Chest X-ray, PA view\n", None),
        (b"", None),
    ],
)
def test_sniff_format_by_magic(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


@pytest.mark.parametrize("implicit_vr", [True, False])
def test_sniff_and_load_dicom_without_preamble(implicit_vr: bool) -> None:
    ds = make_dataset(two_level(500, 3500))
    del ds.file_meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=implicit_vr, little_endian=True)
    data = buffer.getvalue()
    assert data[:2] == b"\x08\x00" and data[128:132] != b"DICM"

    assert sniff_format(data[:1024]) == "dicom"
    study = load_study(data)
    expected = "Implicit VR Little Endian" if implicit_vr else "Explicit VR Little Endian"
    assert study.info.transfer_syntax == expected
    assert study.pixels[0, 0] == 255 and study.pixels[-1, -1] == 0


def test_sniff_rejects_random_bytes_that_start_like_a_group_0008_tag() -> None:
    head = b"\x08\x00\x05\x00" + np.random.default_rng(1).bytes(1020)
    assert sniff_format(head) is None


# --- DICOM: grayscale pipeline ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pixels", "bits_stored"),
    [
        (gradient(high=255, dtype=np.uint8), 8),
        (gradient(high=4095), 12),
        (gradient(high=65535), 16),
    ],
)
def test_dicom_bit_depths_fill_the_8_bit_range(pixels: np.ndarray, bits_stored: int) -> None:
    study = load_study(make_dicom(pixels, bits_stored=bits_stored))

    assert study.pixels.dtype == np.uint8 and study.pixels.shape == pixels.shape
    assert study.pixels[0, 0] == 0 and study.pixels[-1, -1] == 255
    assert np.all(np.diff(study.pixels.ravel().astype(int)) >= 0)  # a monotonic ramp stays monotonic
    assert study.info.bits_stored == bits_stored
    assert study.warnings == []


def test_dicom_bits_above_bits_stored_are_ignored() -> None:
    clean = gradient(high=4095)
    noisy = clean | np.uint16(1 << 14)  # e.g. an overlay plane in the unused high bits
    assert np.array_equal(
        load_study(make_dicom(noisy, bits_stored=12)).pixels,
        load_study(make_dicom(clean, bits_stored=12)).pixels,
    )


def test_monochrome1_is_inverted_so_bright_stays_bright() -> None:
    monochrome2 = two_level(500, 3500)
    monochrome1 = (4095 - monochrome2).astype(np.uint16)  # the same film, stored the other way round

    as_m2 = load_study(make_dicom(monochrome2, bits_stored=12)).pixels
    as_m1 = load_study(make_dicom(monochrome1, bits_stored=12, photometric="MONOCHROME1")).pixels

    assert as_m2[0, 0] == 255 and as_m2[-1, -1] == 0
    assert np.array_equal(as_m1, as_m2)


def test_rescale_then_window_center_width_hand_computed() -> None:
    stored = np.array([300, 450, 500, 550, 700], dtype=np.uint16)  # HU = 2 * stored - 1000
    pixels = np.tile(stored, (40, 8))
    ds = make_dataset(
        pixels, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=401
    )

    row = load_study(to_bytes(ds)).pixels[0, :5]

    # HU -400, -100, 0, 100, 400 through centre 0, width 401 (PS3.3 C.11.2.1.2.1):
    # -400 <= -200.5 -> 0; (-99.5/400 + .5) * 255 = 64.07; (0.5/400 + .5) * 255 = 127.8;
    # (100.5/400 + .5) * 255 = 191.57; 400 > 199.5 -> 255.
    assert row.tolist() == [0, 64, 128, 192, 255]


def test_window_matches_the_standard_on_a_ramp() -> None:
    pixels = gradient(high=4095)
    study = load_study(make_dicom(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1024))
    expected = dicom_linear_window(pixels, 2048, 1024)
    assert np.abs(study.pixels.astype(int) - expected).max() <= 1
    assert study.pixels[0, 0] == 0 and study.pixels[-1, -1] == 255


def test_voi_lut_sequence_is_preferred_over_the_window_hand_computed() -> None:
    stored = np.array([900, 1000, 1064, 1128, 1255, 3000], dtype=np.uint16)
    ds = make_dataset(np.tile(stored, (40, 6)), bits_stored=12, WindowCenter=100, WindowWidth=10)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 1000, 12])  # 256 entries, first input 1000, 12-bit output
    item.add_new(0x00283006, "US", [16 * i for i in range(256)])  # 0 .. 4080
    ds.VOILUTSequence = [item]

    row = load_study(to_bytes(ds)).pixels[0, :6]

    # below the first input -> entry 0; 1064 -> 1024/4080*255 = 64; 1128 -> 2048/4080*255 = 128;
    # 1255 -> last entry 4080 -> 255; beyond the table -> last entry.
    assert row.tolist() == [0, 0, 64, 128, 255, 255]


def test_modality_lut_sequence_then_window() -> None:
    stored = gradient(high=4095)
    ds = make_dataset(stored, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])
    item.add_new(0x00283006, "US", [4095 - i for i in range(4096)])  # an inverting modality LUT
    ds.ModalityLUTSequence = [item]

    study = load_study(to_bytes(ds))

    expected = dicom_linear_window(4095 - stored.astype(int), 2048, 4096)
    assert np.abs(study.pixels.astype(int) - expected).max() <= 1
    assert study.pixels[0, 0] == 255 and study.pixels[-1, -1] == 0


def test_without_window_a_robust_percentile_window_ignores_outliers() -> None:
    pixels = gradient(high=1000) + 1000
    pixels[0, :3] = 4095  # three hot pixels must not squash the image
    study = load_study(make_dicom(pixels, bits_stored=12))
    assert study.pixels[24, 32] in range(120, 136)
    assert study.pixels[0, 0] == 255


def test_invalid_window_falls_back_with_a_warning() -> None:
    study = load_study(make_dicom(gradient(), bits_stored=12, WindowCenter=100, WindowWidth=0))
    assert study.pixels[0, 0] == 0 and study.pixels[-1, -1] == 255
    assert any("display window" in warning for warning in study.warnings)


def test_ct_is_processed_with_a_modality_warning() -> None:
    hounsfield = np.full((64, 64), -1000, dtype=np.int16)
    hounsfield[16:48, 16:48] = 40
    ds = make_dataset(
        hounsfield + 1024, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    ds.Modality = "CT"
    study = load_study(to_bytes(ds))

    assert study.pixels[32, 32] == 128 and study.pixels[0, 0] == 0
    assert study.info.modality == "CT"
    assert any(
        w.startswith("This is a CT image; meddx is designed for chest radiographs") for w in study.warnings
    )


def test_unknown_modality_is_not_echoed() -> None:
    ds = make_dataset(gradient())
    ds.Modality = "ZZ"
    study = load_study(to_bytes(ds))
    assert study.warnings == [
        "This is an image whose modality is not CR or DX; meddx is designed for chest radiographs (CR or "
        "DX), so its findings may not apply to this image."
    ]


def test_signed_pixels_are_read_as_signed() -> None:
    pixels = np.full((64, 64), -2000, dtype=np.int16)
    pixels[:32] = 2000
    study = load_study(make_dicom(pixels))
    assert study.pixels[0, 0] == 255 and study.pixels[-1, -1] == 0


def test_multi_frame_uses_the_first_frame_with_a_warning() -> None:
    frames = np.stack([two_level(0, 4000), two_level(4000, 0), two_level(2000, 2000)])
    study = load_study(make_dicom(frames, frames=3, bits_stored=12))

    assert study.pixels.shape == (64, 64)
    assert study.pixels[0, 0] == 255 and study.pixels[-1, -1] == 0
    assert "Multi-frame DICOM: only the first of 3 frames was analysed." in study.warnings
    assert study.info.frames == 3


# --- DICOM: colour and compression -------------------------------------------------------------------


def colour_blocks() -> np.ndarray:
    """Four 32x32 blocks: red, green, blue, mid grey."""
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[:32, :32] = (255, 0, 0)
    rgb[:32, 32:] = (0, 255, 0)
    rgb[32:, :32] = (0, 0, 255)
    rgb[32:, 32:] = (128, 128, 128)
    return rgb


EXPECTED_LUMA = {(16, 16): 76, (16, 48): 150, (48, 16): 29, (48, 48): 128}  # 0.299, 0.587, 0.114


def assert_colour_blocks(pixels: np.ndarray, tolerance: int) -> None:
    for (y, x), luma in EXPECTED_LUMA.items():
        assert abs(int(pixels[y, x]) - luma) <= tolerance, (y, x, pixels[y, x])


def test_rgb_dicom_becomes_luminance() -> None:
    study = load_study(make_dicom(colour_blocks(), photometric="RGB"))
    assert_colour_blocks(study.pixels, tolerance=0)
    assert study.info.photometric_interpretation == "RGB"


def test_ybr_full_dicom_is_converted_to_rgb_first() -> None:
    ybr = convert_color_space(colour_blocks(), "RGB", "YBR_FULL")
    study = load_study(make_dicom(ybr, photometric="YBR_FULL"))
    assert_colour_blocks(study.pixels, tolerance=2)


def test_jpeg_baseline_ybr_full_422_dicom() -> None:
    jpeg = encode(Image.fromarray(colour_blocks()), "JPEG", quality=95, subsampling=1)  # 4:2:2
    ds = make_dataset(colour_blocks(), photometric="YBR_FULL_422")
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit

    study = load_study(to_bytes(ds))

    assert_colour_blocks(study.pixels, tolerance=4)
    assert study.info.transfer_syntax == "JPEG Baseline (Process 1)"


@pytest.mark.parametrize(
    ("syntax", "plugin"), [(RLELossless, ""), (JPEG2000Lossless, "pylibjpeg")], ids=["rle", "j2k"]
)
def test_lossless_compressed_dicom_matches_uncompressed(syntax: UID, plugin: str) -> None:
    pixels = gradient(high=4095)
    pixels[10:20, 10:20] = 4000
    ds = make_dataset(pixels, bits_stored=12)
    expected = load_study(to_bytes(ds)).pixels
    ds.compress(syntax, encoding_plugin=plugin)

    study = load_study(to_bytes(ds))

    assert np.array_equal(study.pixels, expected)
    assert study.info.transfer_syntax == syntax.name


def test_undecodable_compressed_pixels_name_the_transfer_syntax() -> None:
    ds = make_dataset(two_level(0, 200, dtype=np.uint8))
    ds.PixelData = encapsulate([b"\xff\xd8 this is not JPEG data " * 8])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(
        InputError, match=r"compressed with JPEG Baseline \(Process 1\), which could not be decoded"
    ):
        load_study(to_bytes(ds), filename="cxr.dcm")


def test_a_panicking_rle_decoder_becomes_input_error() -> None:
    """pylibjpeg-rle panics (pyo3's PanicException, a BaseException) when a run overruns its segment."""
    overrunning = b"\x81\x00" * 9  # nine runs of 128 bytes in a 1024-byte segment
    second = b"\x81\x00" * 8
    frame = struct.pack("<16I", 2, 64, 64 + len(overrunning), *[0] * 13) + overrunning + second
    ds = make_dataset(np.zeros((32, 32), dtype=np.uint16))
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    with pytest.raises(InputError, match="compressed with RLE Lossless, which could not be decoded"):
        load_study(to_bytes(ds))


# --- DICOM: bad files and privacy --------------------------------------------------------------------


def test_dicom_without_pixel_data() -> None:
    ds = make_dataset(two_level(0, 200, dtype=np.uint8))
    del ds.PixelData
    with pytest.raises(InputError, match=r"The file 'sr\.dcm' has no image \(pixel data\)"):
        load_study(to_bytes(ds), filename="sr.dcm")


def test_dicom_header_claiming_a_huge_image_is_refused_before_decoding() -> None:
    ds = make_dataset(two_level(0, 200))
    ds.Rows = ds.Columns = 20000  # 400 million pixels, two bytes each, but only 8 KiB of data
    with pytest.raises(InputError, match=r"20000x20000 pixels \(400,000,000 pixels\).*at most 60,000,000"):
        load_study(to_bytes(ds), filename="huge.dcm")


def test_truncated_uncompressed_dicom_is_damaged() -> None:
    data = make_dicom(gradient())
    with pytest.raises(InputError, match=r"'cut\.dcm' is damaged or incomplete"):
        load_study(data[: len(data) - 1000], filename="cut.dcm")


def test_unsupported_photometric_interpretation() -> None:
    with pytest.raises(InputError, match="PALETTE COLOR, which meddx does not support"):
        load_study(make_dicom(two_level(0, 200, dtype=np.uint8), photometric="PALETTE COLOR"))


@pytest.mark.parametrize("variant", ["plain", "monochrome1", "multiframe", "ct", "rle", "rgb"])
def test_identifiers_never_reach_the_study(variant: str) -> None:
    if variant == "multiframe":
        ds = make_dataset(np.stack([gradient()] * 2), frames=2)
    elif variant == "rgb":
        ds = make_dataset(colour_blocks(), photometric="RGB")
    else:
        ds = make_dataset(
            gradient(), photometric="MONOCHROME1" if variant == "monochrome1" else "MONOCHROME2"
        )
    if variant == "ct":
        ds.Modality = "CT"
    if variant == "rle":
        ds.compress(RLELossless)

    study = load_study(to_bytes(ds))

    text = repr(study.info.to_dict()) + repr(study.warnings) + repr(vars(study).keys())
    for value in [*IDENTIFIERS.values(), "Doe", "Jane", "House", str(ds.SOPInstanceUID)]:
        assert value not in text
    assert set(study.info.to_dict()) == METADATA_KEYS


def test_corrupted_dicom_headers_raise_input_error_and_never_echo_identifiers(recwarn, caplog) -> None:
    """A damaged length can make a value run on into PatientName; nothing may repeat it anywhere."""
    caplog.set_level("DEBUG")
    seed = make_dicom(gradient(), bits_stored=12)
    rng = np.random.default_rng(7)
    messages = []
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(0, 900)] = rng.integers(0, 256)
        try:
            study = load_study(bytes(data))
        except InputError as error:
            messages.append(str(error))
        else:
            messages.extend(study.warnings)
            messages.append(repr(study.info.to_dict()))
    messages.extend(str(warning.message) for warning in recwarn)
    messages.append(caplog.text)
    text = "\n".join(messages)
    for value in IDENTIFIERS.values():
        assert value not in text


def test_dicom_metadata() -> None:
    study = load_study(make_dicom(gradient(), bits_stored=12))
    assert study.info.to_dict() == {
        "source_format": "dicom",
        "width": 64,
        "height": 48,
        "bits_stored": 12,
        "modality": "DX",
        "view_position": "PA",
        "photometric_interpretation": "MONOCHROME2",
        "pixel_spacing": [0.139, 0.139],
        "body_part": "CHEST",
        "frames": 1,
        "transfer_syntax": "Explicit VR Little Endian",
    }


def test_large_16_bit_dicom_loads_without_a_pathological_slowdown() -> None:
    """A 3000 x 3000 16-bit film is read and windowed to 8 bits, in well under the request budget.

    The speed itself is measured by the bench (``reading a 3000 x 3000 16-bit DICOM``: about 0.05 s); the
    bound here only catches a per-pixel Python loop or a quadratic step, with room for a busy machine.
    """
    rng = np.random.default_rng(0)
    pixels = (np.add.outer(np.arange(3000), np.arange(3000)) * 5 + rng.integers(0, 200, (3000, 3000))).astype(
        np.uint16
    )
    data = make_dicom(pixels, bits_stored=16, RescaleSlope=1, RescaleIntercept=0)

    start = time.perf_counter()
    study = load_study(data)
    elapsed = time.perf_counter() - start

    assert study.size == (3000, 3000)
    assert study.pixels.dtype == np.uint8 and study.pixels.min() < 20 and study.pixels.max() > 235
    assert elapsed < 10.0, f"{elapsed:.2f} s"


# --- raster images -----------------------------------------------------------------------------------


def test_16_bit_png_with_a_narrow_range_is_windowed() -> None:
    study = load_study(encode(Image.fromarray(gradient(high=4095)), "PNG"))
    assert study.pixels[0, 0] == 0 and study.pixels[-1, -1] == 255
    assert study.info.bits_stored == 16 and study.info.source_format == "png"


def test_16_bit_png_using_the_full_range_is_scaled_linearly() -> None:
    pixels = gradient(high=65535)
    study = load_study(encode(Image.fromarray(pixels), "PNG"))
    assert np.array_equal(study.pixels, np.rint(pixels / 257).astype(np.uint8))


def test_8_bit_grayscale_png_is_kept_as_is() -> None:
    pixels = gradient(high=255, dtype=np.uint8)
    study = load_study(encode(Image.fromarray(pixels), "PNG"))
    assert np.array_equal(study.pixels, pixels)
    assert study.warnings == []
    assert study.info.photometric_interpretation == "MONOCHROME2"


def test_cmyk_jpeg() -> None:
    cmyk = np.zeros((64, 64, 4), dtype=np.uint8)
    cmyk[:, 32:, 3] = 255  # right half: full black ink
    study = load_study(encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95))
    assert study.pixels[:, :24].min() > 240 and study.pixels[:, 40:].max() < 15
    assert study.info.photometric_interpretation == "CMYK"


def test_palette_png_with_transparency() -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([255, 255, 255] * 2 + [0, 0, 0] * 254)
    image.paste(1, (32, 0, 64, 64))  # right half: opaque white; left half: transparent white
    study = load_study(encode(image, "PNG", transparency=0))

    assert study.pixels[:, :32].max() == 0 and study.pixels[:, 32:].min() == 255
    assert "The image has transparent areas; they were treated as black." in study.warnings


def test_la_png_is_composited_over_black() -> None:
    luminance = np.full((64, 64), 200, dtype=np.uint8)
    alpha = np.zeros((64, 64), dtype=np.uint8)
    alpha[:32] = 255
    study = load_study(encode(Image.fromarray(np.dstack([luminance, alpha]), "LA"), "PNG"))
    assert study.pixels[:32].min() == 200 and study.pixels[32:].max() == 0


def test_opaque_rgba_png_becomes_luminance_without_a_transparency_warning() -> None:
    rgba = np.dstack([colour_blocks(), np.full((64, 64), 255, dtype=np.uint8)])
    study = load_study(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert_colour_blocks(study.pixels, tolerance=1)
    assert [w[:22] for w in study.warnings] == ["The image is in colour"]  # its only warning: colour blocks


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((40, 64), dtype=np.uint8)  # 64 wide, 40 tall, as stored
    pixels[:8, :8] = 255  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    study = load_study(encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif))

    assert study.size == (40, 64) and study.pixels.shape == (64, 40)
    assert study.pixels[:8, -8:].mean() > 200  # the top-left corner is now top-right


def test_animated_gif_uses_the_first_frame_with_a_warning() -> None:
    frames = [Image.fromarray(two_level(40, 220, dtype=np.uint8)), Image.new("L", (64, 64), 128)]
    frames.append(Image.new("L", (64, 64), 0))
    study = load_study(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100))

    assert study.pixels[0, 0] == 220 and study.pixels[-1, -1] == 40
    assert "Animated GIF: only the first of 3 frames was analysed." in study.warnings


def test_multi_page_tiff_uses_the_first_page_with_a_warning() -> None:
    first, second = Image.fromarray(two_level(10, 250, dtype=np.uint8)), Image.new("L", (64, 64), 128)
    study = load_study(encode(first, "TIFF", save_all=True, append_images=[second]))

    assert study.pixels[0, 0] == 250 and study.pixels[-1, -1] == 10
    assert "Multi-page TIFF: only the first of 2 pages was analysed." in study.warnings
    assert study.info.frames == 2 and study.info.source_format == "tiff"


@pytest.mark.parametrize(("fmt", "options"), [("WEBP", {"lossless": True}), ("BMP", {}), ("TIFF", {})])
def test_lossless_formats_round_trip(fmt: str, options: dict) -> None:
    pixels = gradient(high=255, dtype=np.uint8)
    study = load_study(encode(Image.fromarray(pixels).convert("RGB"), fmt, **options))
    assert np.array_equal(study.pixels, pixels)
    assert study.info.source_format == fmt.lower()


def test_path_and_file_object_sources(tmp_path) -> None:
    data = encode(Image.fromarray(gradient(high=255, dtype=np.uint8)), "PNG")
    path = tmp_path / "upload.png"
    path.write_bytes(data)

    from_path, from_str = load_study(path), load_study(str(path))
    from_file = load_study(io.BytesIO(data))

    assert np.array_equal(from_path.pixels, from_file.pixels)
    assert np.array_equal(from_str.pixels, from_file.pixels)
    with pytest.raises(InputError, match=r"'missing\.png' could not be opened"):
        load_study(tmp_path / "missing.png")


def test_to_pil_and_size() -> None:
    study = load_study(encode(Image.fromarray(gradient(high=255, dtype=np.uint8)), "PNG"))
    assert isinstance(study, Study) and study.size == (64, 48)
    rgb, gray = study.to_pil(), study.to_pil("L")
    assert rgb.mode == "RGB" and rgb.size == (64, 48)
    assert gray.mode == "L" and np.array_equal(np.asarray(gray), study.pixels)


def test_flat_image_gets_a_contrast_warning() -> None:
    study = load_study(encode(Image.new("L", (64, 64), 90), "PNG"))
    assert any(w.startswith("The image has almost no contrast") for w in study.warnings)
    dicom = load_study(make_dicom(np.full((64, 64), 1234, dtype=np.uint16), bits_stored=12))
    assert any(w.startswith("The image has almost no contrast") for w in dicom.warnings)


# --- bad images --------------------------------------------------------------------------------------


def noise_image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_damaged(fmt: str) -> None:
    data = encode(noise_image(), fmt)
    with pytest.raises(InputError, match=r"'scan\.x' is damaged or incomplete"):
        load_study(data[: len(data) // 2], filename="scan.x")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_with_a_bad_crc_is_damaged() -> None:
    data = bytearray(encode(noise_image(), "PNG"))
    offset = next(offset for offset, kind in png_chunks(bytes(data)) if kind == b"IDAT")
    length = struct.unpack_from(">I", data, offset)[0]
    data[offset + 8 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    with pytest.raises(InputError, match="is damaged or incomplete"):
        load_study(bytes(data))


def test_tiny_image_is_refused() -> None:
    with pytest.raises(InputError, match=r"'dot\.png' is only 1x1 pixels; meddx needs at least 32 pixels"):
        load_study(encode(Image.new("L", (1, 1)), "PNG"), filename="dot.png")


def test_png_header_declaring_a_huge_image_is_refused_before_decoding() -> None:
    data = bytearray(encode(Image.new("L", (40, 40)), "PNG"))
    header = struct.pack(">II", 20000, 20000) + bytes(data[24:29])  # width, height, depth, colour, ...
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    with pytest.raises(InputError, match=r"20000x20000 pixels \(400,000,000 pixels\).*at most 60,000,000"):
        load_study(bytes(data))


def test_custom_limits() -> None:
    data = encode(Image.new("L", (64, 64), 100), "PNG")
    with pytest.raises(InputError, match="at most 1,000 pixels"):
        load_study(data, limits=Limits(max_pixels=1000))
    with pytest.raises(InputError, match="larger than 100 bytes, the most meddx accepts"):
        load_study(io.BytesIO(data), limits=Limits(max_file_mb=100 / 2**20))
    with pytest.raises(InputError, match="larger than 64 MB"):
        load_study(bytes(64 * 2**20 + 1))
    with pytest.raises(InputError, match="needs at least 100 pixels"):
        load_study(data, limits=Limits(min_side=100))


@pytest.mark.parametrize(
    ("data", "filename", "phrase"),
    [
        (b"", "empty.png", "'empty.png' is empty (0 bytes)"),
        (np.random.default_rng(0).bytes(4096), None, "The file is not an image meddx can read"),
        (b"Patient is a 54 year old with cough.\n", "scan.jpg", "'scan.jpg' is not an image meddx can read"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "cxr.png", "an SVG drawing"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "report.pdf", "a PDF document"),
        (b"PK\x03\x04" + bytes(100), "series.zip", "a ZIP archive"),
    ],
    ids=["empty", "random", "text", "svg", "pdf", "zip"],
)
def test_unrecognised_content_names_the_accepted_formats(
    data: bytes, filename: str | None, phrase: str
) -> None:
    with pytest.raises(InputError) as raised:
        load_study(data, filename=filename)
    message = str(raised.value)
    assert phrase in message and ACCEPTED_FORMATS in message
    assert "Traceback" not in message and "Error(" not in message
