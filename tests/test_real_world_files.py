"""Real-world files read right (issue 27): each case is built here (`tests/corpus_real_world.py`), shaped like
a file from pydicom's, pylibjpeg's or Pillow's test data that meddx misread, and checked pixel by pixel
against an independent computation. The refusals' wording is checked on all three surfaces by
`tests/test_bad_inputs.py`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from libjpeg import decode as libjpeg_decode
from PIL import GifImagePlugin
from pydicom import dcmread
from pydicom.pixels import apply_windowing

from meddx.errors import InputError
from meddx.io import load_study, sniff_format
from meddx.io.dicom_display import BROKEN_MODALITY_LUT, FLAT_WINDOW
from meddx.io.pixels import has_contrast
from tests import corpus_real_world as r


def scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` mapped linearly from low..high onto 0..255, in float64 (an independent reference)."""
    return np.rint(np.clip((values.astype(np.float64) - low) * 255 / (high - low), 0, 255))


def automatic(frame: np.ndarray) -> np.ndarray:
    return scaled(frame, *np.percentile(frame, (0.5, 99.5)))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one gray level (float32 against float64 rounding)."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


# --- the stored window ------------------------------------------------------------------------------


def test_a_stored_window_far_below_the_pixel_values_gives_way_to_an_automatic_window():
    data = r.dicom_window_below_pixels()
    ds = dcmread(io.BytesIO(data))
    as_stored = scaled(apply_windowing(ds.pixel_array, ds), 0, 65535)  # what the file's window shows
    assert not has_contrast(as_stored.astype(np.uint8)), "the test film must reproduce the blank film"

    study = load_study(data, filename="dx.dcm")

    assert FLAT_WINDOW in study.warnings
    assert not any("almost no contrast" in w for w in study.warnings)
    assert close(study.pixels, automatic(ds.pixel_array))


def test_a_stored_window_that_shows_the_film_is_kept():
    data = r.dicom_window_right()
    ds = dcmread(io.BytesIO(data))
    as_stored = scaled(apply_windowing(ds.pixel_array, ds), 0, 65535)
    assert not close(as_stored, automatic(ds.pixel_array)), "the file's window must differ from automatic"

    study = load_study(data, filename="dx.dcm")

    assert study.warnings == []
    assert close(study.pixels, as_stored)


def test_a_voi_lut_that_turns_the_film_into_one_shade_gives_way_to_an_automatic_window():
    data = r.dicom_flat_voi_lut()
    study = load_study(data, filename="lut.dcm")
    assert FLAT_WINDOW in study.warnings
    assert close(study.pixels, automatic(dcmread(io.BytesIO(data)).pixel_array))


def test_an_empty_modality_lut_item_is_ignored_with_a_warning_and_the_film_is_read():
    pixels = r.chest_like(low=200, high=3800)
    study = load_study(r.dicom_empty_modality_lut_item(pixels), filename="lut.dcm")
    assert BROKEN_MODALITY_LUT in study.warnings
    plain = load_study(r.dicom_bytes(r.chest_dataset(pixels, bits_stored=12)), filename="plain.dcm")
    assert np.array_equal(study.pixels, plain.pixels)


# --- formats and frames -----------------------------------------------------------------------------


def test_a_bigtiff_is_read():
    pixels = r.chest_like(96, 80)
    data = r.bigtiff(pixels)
    assert sniff_format(data) == "tiff"
    assert sniff_format(b"MM\x00+" + data[4:]) == "tiff"
    study = load_study(data, filename="big.tif")
    assert study.info.source_format == "tiff"
    assert np.array_equal(study.pixels, pixels)


def test_a_gif_whose_second_frame_reaches_beyond_the_canvas_is_read_at_the_first_frames_size():
    data = r.gif_second_frame_beyond_canvas(offset=(40, 30))
    walked = GifImagePlugin.GifImageFile(io.BytesIO(data))
    walked.seek(1)
    walked.seek(0)
    assert walked.size == (104, 78), "the test file must grow the canvas of a reader that walks to frame 2"

    study = load_study(data, filename="anim.gif")

    assert study.size == (64, 48)
    assert np.array_equal(study.pixels, r.chest_like(48, 64))
    assert "Animated GIF: only the first of 2 frames was analysed." in study.warnings


def test_a_dicom_whose_preamble_starts_with_png_s_signature_is_read_as_dicom():
    data = r.dicom_png_preamble()
    assert sniff_format(data) == "png"
    study = load_study(data, filename="film.dcm")
    assert study.info.source_format == "dicom"
    assert np.array_equal(study.pixels, r.chest_like(64, 64))


@pytest.mark.parametrize("make", [r.dicom_big_endian_no_meta, r.dicom_from_patient_group])
def test_a_data_set_without_file_meta_is_read(make):
    study = load_study(make(), filename="bare")
    assert study.info.source_format == "dicom"
    assert np.array_equal(study.pixels, r.chest_like(64, 64))


def test_random_bytes_starting_like_a_dicom_group_are_still_refused():
    rng = np.random.default_rng(7)
    for group in (b"\x10\x00", b"\x00\x10", b"\x28\x00"):
        data = group + rng.bytes(4094)
        with pytest.raises(InputError, match="is not an image meddx can read"):
            load_study(data, filename="noise.dcm")


# --- refusals that say the truth --------------------------------------------------------------------


def test_a_12_bit_lossless_jpeg_is_refused_by_its_encoding_not_as_damaged():
    pixels = r.chest_like(64, 64, low=100, high=4000)
    data = r.lossless_jpeg(pixels, 12)
    assert np.array_equal(libjpeg_decode(data), pixels), "the test file must be a valid lossless JPEG"
    with pytest.raises(InputError) as raised:
        load_study(data, filename="ll.jpg")
    message = str(raised.value)
    assert "'ll.jpg' is a lossless JPEG with 12-bit samples" in message
    assert "damaged" not in message and "PNG" in message


def test_an_8_bit_lossless_jpeg_is_read():
    pixels = r.chest_like(64, 64)
    assert np.array_equal(load_study(r.lossless_jpeg(pixels, 8), filename="ll.jpg").pixels, pixels)


def test_a_header_claiming_more_frames_than_the_data_holds_is_refused_as_a_disagreement():
    for make in (r.dicom_claims_100k_frames, r.dicom_j2k_claims_100k_frames):
        with pytest.raises(InputError) as raised:
            load_study(make(), filename="one.dcm")
        message = str(raised.value)
        assert "says it holds 100,000 frames, but its pixel data holds 1" in message
        assert "header disagrees with the data" in message
