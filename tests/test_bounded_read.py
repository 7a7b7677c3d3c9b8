"""Bounded work per upload (issue 19): the read runs in a worker process with a wall-clock and a memory
limit, and the readers refuse what would cost more than any film (inflated bytes, pages, sequence items,
nesting) before the library call that would spend it.

The worker's limits are proved here with the corpus's hostile files and the readers' own caps raised, so
that only the worker's limit can stop them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io import load_study
from meddx.io.bounded import FORKSERVER, load_study_bounded
from tests import corpus as c

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not FORKSERVER, reason="reads are bounded where forkserver exists (POSIX)")


def refused_within(seconds: float, source: bytes, limits: Limits, filename: str = "film.dcm") -> str:
    start = time.perf_counter()
    with pytest.raises(InputError) as raised:
        load_study_bounded(source, filename=filename, limits=limits)
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"refused after {elapsed:.1f} s"
    message = str(raised.value)
    assert "\n" not in message and "Error" not in message and "Traceback" not in message
    return message


def test_the_worker_returns_exactly_what_reading_in_process_returns():
    for make in (c.dicom_plain, c.dicom_monochrome1, c.good_png, c.jpeg_exif_rotated, c.dicom_multiframe):
        data = make()
        here, there = load_study(data, filename="f"), load_study_bounded(data, filename="f")
        assert np.array_equal(here.pixels, there.pixels)
        assert here.info == there.info and here.warnings == there.warnings


def test_a_path_is_read_by_the_worker_within_the_file_size_limit(tmp_path: Path):
    path = tmp_path / "film.dcm"
    path.write_bytes(c.dicom_plain())
    assert load_study_bounded(path).info.source_format == "dicom"
    message = refused_within(10, path.read_bytes(), Limits(max_file_mb=0.01))
    assert "larger than" in message


def test_a_read_that_runs_past_the_time_limit_is_killed_with_a_sentence():
    """100,000 TIFF pages with the page cap lifted: Pillow walks them for about a minute; the worker
    is killed after 1 s."""
    limits = Limits(max_frames=10**7, read_timeout_s=1)
    message = refused_within(6, c.tiff_many_pages()(), limits, "pages.tif")
    assert message.startswith("The file 'pages.tif' took longer than 1 s to read, so meddx stopped")


def test_a_million_sequence_items_are_stopped_by_the_time_limit_when_the_item_cap_is_lifted():
    limits = Limits(max_sequence_items=10**7, max_data_elements=10**7, read_timeout_s=1)
    message = refused_within(6, c.dicom_million_items(), limits, "items.dcm")
    assert "took longer than 1 s" in message


def test_a_read_that_needs_more_memory_than_allowed_is_refused_with_a_sentence():
    """The deflate bomb with the inflation cap lifted to 1 GB, in a worker allowed 200 MB."""
    limits = Limits(max_inflated_mb=1024, read_memory_mb=200)
    message = refused_within(30, c.dicom_deflate_bomb(), limits, "zbomb.dcm")
    assert "needs more than 200 MB of memory to read" in message


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (c.dicom_deflate_bomb, "expands to more than 256 MB"),
        (c.dicom_million_items, "more than 10,000 DICOM sequence items"),
        (c.dicom_deep_nesting, "nests DICOM sequences more than 8 deep"),
        (c.tiff_many_pages(), "more than 1,000 pages"),
    ],
    ids=["deflate_bomb", "million_items", "deep_nesting", "tiff_100k_pages"],
)
def test_the_readers_own_caps_refuse_before_the_library_call(make, phrase):
    """Each refused by its cap in the reader (not by the worker's limits), in well under the time limit."""
    message = refused_within(15, make(), Limits())
    assert phrase in message


def test_lower_caps_apply():
    limits = dataclasses.replace(Limits(), max_sequence_items=2, max_sequence_depth=1)
    ds = c.dicom_dataset()
    ds.add_new(0x00091010, "SQ", [c.Dataset(), c.Dataset(), c.Dataset()])
    assert "more than 2 DICOM sequence items" in refused_within(10, c.dicom_bytes(ds), limits)


def test_the_worker_never_runs_the_main_script(tmp_path: Path):
    """A forkserver child normally re-imports the parent's main script: ``app.py`` would start a second app
    in every reader. The readers leave the main module alone."""
    marker = tmp_path / "runs.txt"
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            with open({str(marker)!r}, "a") as out:
                out.write("ran\\n")
            from meddx.io.bounded import load_study_bounded
            from tests.corpus import good_png
            print(load_study_bounded(good_png()).info.source_format)
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "png"
    assert marker.read_text() == "ran\n"


def test_read_timeout_zero_reads_in_process():
    study = load_study_bounded(c.good_png(), limits=Limits(read_timeout_s=0))
    assert study.info.source_format == "png"
