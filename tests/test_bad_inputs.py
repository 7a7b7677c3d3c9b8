"""A corpus of bad and odd inputs through all three surfaces: `analyze`, the live app, and the CLI.

Each case names what it must produce: ``("error", phrase)``, a refusal whose human message contains the
phrase (an `InputError` from `analyze`, an `AppError` from the app, exit status 2 and one line on stderr
from the CLI), or ``("ok", phrase)``, a result whose warnings contain the phrase (``None``: no warning).
No surface may show a traceback or an exception class name, and the app must keep serving afterwards.
The files come from `tests/corpus.py` (imported as ``c``); some cases also check one fact of the result
(``CHECKS``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from meddx.anatomy.plausibility import WARNING as LUNG_CHECK
from meddx.config import Settings
from meddx.errors import InputError
from meddx.io.source import clean_name
from meddx.pipeline import analyze
from meddx.report.render import render_html, render_json
from tests import corpus as c
from tests import corpus_real_world as r
from tests.helpers import files_under

NOT_A_CHEST_FILM = LUNG_CHECK.split(":")[0]  # the lung-field model's warning (tests/test_anatomy_model.py)

ROOT = Path(__file__).resolve().parents[1]
GOOD = c.good_png


def error(phrase: str) -> tuple[str, str]:
    """The input is refused with a message containing ``phrase``."""
    return ("error", phrase)


def ok(warning: str | None = None) -> tuple[str, str | None]:
    """The input is analysed, with a warning containing ``warning`` (None: no warning at all)."""
    return ("ok", warning)


# fmt: off
IMAGE_CASES = [
    # name                file name      bytes factory              expected outcome
    ("zero_byte",         "empty.png",   c.zero_bytes,              error("is empty (0 bytes)")),
    ("random_png",        "random.png",  c.random_bytes(1),         error("'random.png' is not an image")),
    ("random_jpg",        "random.jpg",  c.random_bytes(2),         error("'random.jpg' is not an image")),
    ("random_dcm",        "random.dcm",  c.random_bytes(3),         error("'random.dcm' is not an image")),
    ("truncated_png",     "cut.png",     c.truncated_png,           error("'cut.png' is damaged")),
    ("truncated_jpeg",    "cut.jpg",     c.truncated_jpeg,          error("'cut.jpg' is damaged")),
    ("png_bad_crc",       "crc.png",     c.png_bad_crc,             error("'crc.png' is damaged")),
    ("one_pixel",         "dot.png",     c.png_1x1,                 error("is only 1x1 pixels")),
    ("thin_strip",        "strip.png",   c.png_thin,                error("is only 16x2000 pixels")),
    ("png_bomb",          "bomb.png",    c.png_bomb,                error("is 20000x20000 pixels")),
    ("jpeg_bomb",         "bomb.jpg",    c.jpeg_bomb,               error("is 20000x20000 pixels")),
    ("png_16_bit",        "deep.png",    c.png_16bit,               ok()),
    ("jpeg_cmyk",         "cmyk.jpg",    c.jpeg_cmyk,               ok()),
    ("png_palette_alpha", "palette.png", c.png_palette_transparent, ok("transparent areas")),
    ("png_clear",         "clear.png",   c.png_fully_transparent,   ok("almost no contrast")),
    ("png_flat",          "flat.png",    c.png_flat,                ok("almost no contrast")),
    ("gif_animated",      "anim.gif",    c.gif_animated,            ok("Animated GIF: only the first of 3")),
    ("tiff_multipage",    "pages.tiff",  c.tiff_multipage,          ok("Multi-page TIFF: only the first")),
    ("jpeg_exif_rotated", "rotated.jpg", c.jpeg_exif_rotated,       ok()),
    ("webp",              "film.webp",   c.webp_lossless,           ok()),
    ("bmp",               "film.bmp",    c.bmp_rgb,                 ok()),
    ("dicom_plain",       "plain.dcm",   c.dicom_plain,             ok()),
    ("dicom_monochrome1", "mono1.dcm",   c.dicom_monochrome1,       ok()),
    ("dicom_no_preamble", "bare",        c.dicom_without_preamble,  ok()),
    ("dicom_no_pixels",   "sr.dcm",      c.dicom_no_pixel_data,     error("'sr.dcm' has no image (pixel")),
    ("dicom_rgb",         "rgb.dcm",     c.dicom_rgb,               ok("The image is in colour")),
    ("dicom_ybr_full",    "ybr.dcm",     c.dicom_ybr_full,          ok("The image is in colour")),
    ("dicom_jpeg2000",    "j2k.dcm",     c.dicom_jpeg2000,          ok()),
    ("dicom_bad_jpeg",    "badjpeg.dcm", c.dicom_undecodable_jpeg,  error("compressed with JPEG Baseline")),
    ("dicom_multiframe",  "cine.dcm",    c.dicom_multiframe,        ok("Multi-frame DICOM: only the first")),
    ("dicom_huge_header", "huge.dcm",    c.dicom_huge_header,       error("is 20000x20000 pixels")),
    ("dicom_zero_rows",   "norows.dcm",  c.dicom_zero_rows,         error("is only 224x0 pixels")),
    ("dicom_truncated",   "cut.dcm",     c.dicom_truncated,         error("'cut.dcm' is damaged")),
    ("dicom_palette",     "palette.dcm", c.dicom_palette_colour,    error("as PALETTE COLOR, which meddx")),
    ("dicom_bad_window",  "window.dcm",  c.dicom_bad_window,        ok("display window stored in the file")),
    ("dicom_ct_slice",    "ct.dcm",      c.dicom_ct_slice,          ok("This is a CT image")),
    ("dicom_mr",          "mr.dcm",      c.dicom_mr,                ok("This is an MR image")),
    ("text_as_jpg",       "notes.jpg",   c.text_file,               error("'notes.jpg' is not an image")),
    ("html_as_png",       "page.png",    c.html_page,               error("'page.png' is not an image")),
    ("svg",               "drawing.svg", c.svg,                     error("it looks like an SVG drawing")),
    ("pdf",               "report.pdf",  c.pdf,                     error("it looks like a PDF document")),
    ("zip_as_dcm",        "series.dcm",  c.zip_archive,             error("it looks like a ZIP archive")),
    ("heic_as_jpg",       "phone.jpg",   c.heic_photo,              error("looks like an HEIC/AVIF photo")),
    # bounded work (issue 19): each refused within the read's time and memory limits
    ("dicom_deflated",    "deflated.dcm", c.dicom_deflated,         ok()),
    ("dicom_deflate_bomb", "zbomb.dcm",  c.dicom_deflate_bomb,      error("expands to more than 256 MB")),
    ("dicom_many_items",  "items.dcm",   c.dicom_million_items,     error("more than 10,000 DICOM sequence")),
    ("dicom_deep_nesting", "deep.dcm",   c.dicom_deep_nesting,      error("nests DICOM sequences more than")),
    ("tiff_100k_pages",   "pages.tif",   c.tiff_many_pages(),       error("more than 1,000 pages")),
    ("png_dicm_at_128",   "dicm.png",    c.png_with_dicm_at_128,    ok()),
    ("dicom_float",       "float.dcm",   c.dicom_float_pixels,      ok()),
    ("dicom_double",      "double.dcm",  c.dicom_double_pixels,     ok()),
    ("dicom_name_in_tags", "view.dcm",   c.dicom_name_in_view_position, ok()),
    ("bidi_file_name",    c.BIDI_NAME,   c.random_bytes(4),         error("'xraygnp.exe' is not an image")),
    # real-world files (issue 27): read right, or refused in words that say what is wrong
    ("dicom_low_window",  "lowwin.dcm",  r.dicom_window_below_pixels, ok("stored in the file shows this")),
    ("dicom_empty_mlut",  "mlut.dcm",    r.dicom_empty_modality_lut_item, ok("modality LUT stored")),
    ("bigtiff",           "big.tif",     r.bigtiff,                 ok()),
    ("gif_wide_frame",    "wide.gif",    r.gif_second_frame_beyond_canvas, ok("Animated GIF: only")),
    ("dicom_be_bare",     "bebare",      r.dicom_big_endian_no_meta, ok()),
    ("dicom_png_preamble", "pngpre.dcm", r.dicom_png_preamble,      ok()),
    ("dicom_new_syntax",  "dif.dcm",     r.dicom_unknown_syntax,    error("with Deflated Image Frame")),
    ("jpeg_12bit_ll",     "ll12.jpg",    r.jpeg_lossless_12bit,     error("lossless JPEG with 12-bit")),
    ("bmp_billions",      "huge.bmp",    r.bmp_claims_billions,     error("'huge.bmp' has a corrupt header")),
    ("gif_huge_frame",    "bomb.gif",    r.gif_frame_claims_65535_square, error("65535x65535 pixels")),
    ("dicom_100k_frames", "frames.dcm",  r.dicom_claims_100k_frames, error("header disagrees with the data")),
    ("dicom_no_rows",     "rowless.dcm", r.dicom_without_rows,      error("it lacks Rows (0028,0010)")),
]
TEXT_CASES = [  # all on a good film (`c.good_png`); labels None means every finding
    # name                notes             labels               expected outcome
    ("notes_100kb",       c.NOTES_100KB,    None,                error("too long: 102,400 characters")),
    ("notes_control",     c.NOTES_CONTROL,  None,                ok()),
    ("notes_rtl",         c.NOTES_RTL,      None,                ok()),
    ("notes_emoji",       c.NOTES_EMOJI,    None,                ok()),
    ("notes_html",        c.NOTES_HTML,     None,                ok()),
    ("notes_markdown",    c.NOTES_MARKDOWN, None,                ok()),
    ("notes_blank",       " \n\t ",         None,                ok()),
    ("labels_empty",      "",               [],                  error("The finding list is empty")),
    ("labels_200",        "",               c.LABELS_200,        error("Too many findings (200); at most")),
    ("labels_duplicated", "",               c.LABELS_DUPLICATED, ok()),
    ("labels_html",       c.NOTES_HTML,     c.LABELS_HTML,       ok()),
    ("labels_markdown",   "",               c.LABELS_MARKDOWN,   ok()),
    ("labels_unicode",    "",               c.LABELS_UNICODE,    ok()),
    ("label_non_latin",   "",               c.LABELS_NON_LATIN,  error("needs at least one Latin letter")),
    ("label_too_long",    "",               ["x" * 81],          error("1-80 characters long; one has 81")),
]
# fmt: on
CHECKS: dict[str, Callable[[dict], bool]] = {
    "png_16_bit": lambda data: data["image"]["bits_stored"] == 16,
    "jpeg_cmyk": lambda data: data["image"]["photometric_interpretation"] == "CMYK",
    "jpeg_exif_rotated": lambda data: (data["image"]["width"], data["image"]["height"]) == (96, 160),
    "dicom_ybr_full": lambda data: data["image"]["photometric_interpretation"] == "YBR_FULL",
    "dicom_jpeg2000": lambda data: data["image"]["transfer_syntax"].startswith("JPEG 2000"),
    "dicom_multiframe": lambda data: data["image"]["frames"] == 3,
    "dicom_deflated": lambda data: data["image"]["transfer_syntax"] == "Deflated Explicit VR Little Endian",
    "png_dicm_at_128": lambda data: data["image"]["source_format"] == "png",
    "bigtiff": lambda data: data["image"]["source_format"] == "tiff",
    "gif_wide_frame": lambda data: (data["image"]["width"], data["image"]["height"]) == (64, 48),
    "dicom_png_preamble": lambda data: data["image"]["source_format"] == "dicom",
    "dicom_float": lambda data: data["image"]["bits_stored"] == 32,
    "dicom_double": lambda data: data["image"]["bits_stored"] == 64,
    "dicom_name_in_tags": lambda data: (
        data["image"]["view_position"] is None
        and data["image"]["body_part"] is None
        and "JANE" not in json.dumps(data)
    ),
    "notes_blank": lambda data: data["notes"] is None,
    "notes_html": lambda data: any(item["name"] == "effusion" for item in data["notes"]["concepts"]),
    "labels_duplicated": lambda data: sorted(f["id"] for f in data["findings"]) == ["effusion", "nodule"],
    "labels_html": lambda data: {f["label"] for f in data["findings"]} == set(c.LABELS_HTML),
    "labels_unicode": lambda data: {f["id"] for f in data["findings"]} >= {"effusion", "hiatus_hernia"},
}
INJECTED_TAGS = ("<script>alert", "<img src=x", "<iframe", "<b>present")
"""Raw HTML from the notes or labels, which must reach neither report unescaped."""
INJECTED_LINKS = ("](javascript", "![x](")
"""Raw Markdown links and images, which must not reach the Markdown report unescaped (HTML is inert)."""
CLI_TEXT_CASES = ["notes_100kb", "notes_control", "labels_empty", "labels_200", "labels_duplicated"]
"""The notes and findings cases also run through the CLI (one process each, so a representative few)."""
CLASS_NAME = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b")


@dataclass(frozen=True)
class Case:
    """One corpus entry: a file, notes and labels, and the expected outcome."""

    name: str
    filename: str
    make: Callable[[], bytes]
    expect: tuple[str, str | None]
    notes: str = ""
    labels: list[str] | None = None

    @property
    def error(self) -> bool:
        return self.expect[0] == "error"


CASES = [Case(name, filename, make, expect) for name, filename, make, expect in IMAGE_CASES] + [
    Case(name, "film.png", GOOD, expect, notes, labels) for name, notes, labels, expect in TEXT_CASES
]
BY_NAME = {case.name: case for case in CASES}
IDS = [case.name for case in CASES]


def test_the_corpus_is_large_and_every_file_name_is_unique():
    assert len(CASES) >= 40
    assert len({case.filename for case in CASES if case.make is not GOOD}) == len(IMAGE_CASES)


def check_message(message: str, case: Case) -> None:
    """A human message: the expected phrase, one line, no traceback, no exception class names."""
    assert case.expect[1] in message, message
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message and 'File "' not in message, message
    assert not CLASS_NAME.search(message), message


def check_result(data: dict, markdown: str, case: Case) -> None:
    """A handled input: scores, the expected warning (or none), the case's own check, inert markup."""
    assert data["findings"] and all(0.0 <= f["probability"] <= 1.0 for f in data["findings"])
    warning = case.expect[1]
    if warning is None:  # none but the lung-field check's: the corpus's drawn films have no lungs
        assert [w for w in data["warnings"] if not w.startswith(NOT_A_CHEST_FILM)] == [], data["warnings"]
    else:
        assert any(warning in w for w in data["warnings"]), data["warnings"]
    if case.name in CHECKS:
        assert CHECKS[case.name](data), case.name
    assert data["disclaimer"] in markdown
    for raw in INJECTED_TAGS + INJECTED_LINKS:
        assert raw not in markdown, raw


# --- surface 1: analyze ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_analyze(case: Case, tiny_settings: Settings):
    call = {"labels": case.labels, "settings": tiny_settings, "filename": case.filename, "top_k": 1}
    if case.error:
        with pytest.raises(InputError) as raised:
            analyze(case.make(), case.notes, **call)
        check_message(str(raised.value), case)
        return
    analysis = analyze(case.make(), case.notes, **call)
    data = render_json(analysis)
    check_result(data, data["report_markdown"], case)
    page = render_html(analysis)
    assert analysis.disclaimer in page
    for raw in INJECTED_TAGS:
        assert raw not in page, raw


# --- surface 2: the live app through gradio_client -------------------------------------------------


def predict(client, path: Path, case: Case) -> tuple[dict, str]:
    """Call ``/analyze`` the way an API user would: labels as free text, nothing else narrowed."""
    from gradio_client import handle_file

    options = {"maps": 1}
    if case.labels is not None:
        options.update(findings=[], custom_findings=", ".join(case.labels))
    return client.predict(handle_file(path), case.notes, api_name="/analyze", **options)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_app(case: Case, client, gradio_tmp: Path, tmp_path: Path):
    from gradio_client.exceptions import AppError

    path = tmp_path / case.filename
    path.write_bytes(case.make())
    if case.error:
        with pytest.raises(AppError) as raised:
            predict(client, path, case)
        check_message(str(raised.value), case)
    else:
        check_result(*predict(client, path, case), case)
    assert files_under(gradio_tmp) == [], "an upload was left behind"


@pytest.mark.slow
def test_app_still_serves_after_the_corpus(client, tmp_path: Path):
    """Every refused input of the corpus, sent in a row, leaves the server answering a good request.

    Self-contained: it sends the refused inputs itself, so it does not depend on `test_app` running first.
    """
    from gradio_client.exceptions import AppError

    for case in (case for case in CASES if case.error):
        data = case.make()
        if len(data) > 2**20:  # the large uploads are `test_app`'s; these are about what follows a refusal
            continue
        path = tmp_path / case.filename
        path.write_bytes(data)
        with pytest.raises(AppError):
            predict(client, path, case)
    path = tmp_path / "film.png"
    path.write_bytes(GOOD())
    data, markdown = predict(client, path, Case("good", "film.png", GOOD, ("ok", None), "cough, fever"))
    check_result(data, markdown, Case("good", "film.png", GOOD, ("ok", None)))
    assert data["notes"]["concepts"]


# --- surface 3: the CLI ----------------------------------------------------------------------------


def run_cli(*args: str, model_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MEDDX_MODEL=f"local-dir:{model_dir}", MEDDX_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "meddx", "analyze", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def check_stderr(stderr: str) -> list[str]:
    """The CLI's stderr lines: each one a ``meddx:`` message, with no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert all(line.startswith("meddx: ") for line in lines), stderr
    return lines


@pytest.mark.slow
def test_cli_batch_over_the_image_corpus(tmp_path: Path, tiny_model_dir: Path):
    """One run over a folder of every image case (plus the files a folder walk skips, named explicitly)."""
    folder, others = tmp_path / "corpus", tmp_path / "not-images"
    image_cases = [case for case in CASES if case.make is not GOOD]
    skipped_suffixes = {".svg", ".pdf", ".exe"}
    c.write_corpus(folder, {x.name: (x.filename, x.make) for x in image_cases if not _skipped(x)})
    explicit = c.write_corpus(others, {x.name: (x.filename, x.make) for x in image_cases if _skipped(x)})
    assert {Path(x.filename).suffix for x in image_cases if _skipped(x)} == skipped_suffixes

    result = run_cli(str(folder), *map(str, explicit.values()), model_dir=tiny_model_dir)

    assert result.returncode == 2
    lines = {line["file"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == {case.filename for case in image_cases}
    stderr = check_stderr(result.stderr)
    for case in image_cases:
        line = lines[case.filename]
        if case.error:
            check_message(line["error"], case)
            assert sum(f"meddx: {clean_name(case.filename)}: " in s for s in stderr) == 1
        else:
            assert "error" not in line, line
            check_result(line, line["disclaimer"], case)
    assert len(stderr) == sum(case.error for case in image_cases)


def _skipped(case: Case) -> bool:
    """Files a folder walk leaves out (not an image suffix): the CLI gets them by name."""
    from meddx.io.sniff import IMAGE_SUFFIXES

    return Path(case.filename).suffix.lower() not in IMAGE_SUFFIXES


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero_byte", "dicom_huge_header", *CLI_TEXT_CASES])
def test_cli_single_file(name: str, tmp_path: Path, tiny_model_dir: Path):
    case = BY_NAME[name]
    path = tmp_path / case.filename
    path.write_bytes(case.make())
    notes = tmp_path / "notes.txt"
    notes.write_text(case.notes, encoding="utf-8")
    args = [str(path), "--json", "--notes-file", str(notes)]
    if case.labels is not None:
        args += ["--labels", ",".join(case.labels) or ","]

    result = run_cli(*args, model_dir=tiny_model_dir)

    stderr = check_stderr(result.stderr)
    if case.error:
        assert result.returncode == 2 and result.stdout == ""
        assert len(stderr) == 1
        check_message(stderr[0], case)
    else:
        assert result.returncode == 0 and stderr == []
        data = json.loads(result.stdout)
        check_result(data, data["disclaimer"], case)
