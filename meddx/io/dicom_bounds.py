"""Bounded work before pydicom parses a DICOM file: inflate a deflated data set within a byte limit, and walk
the data set's structure (elements, sequence items, nesting) within counted limits.

pydicom inflates a Deflated Explicit VR Little Endian data set in one ``zlib.decompress`` call, with no
limit (1.5 MB became 3 GB), and parses every item of an undefined-length sequence even when only a few
tags are asked for (a private sequence of a million empty items: 20 s). Both happen inside one library call,
so they are bounded here, before it: `inflate_if_deflated` hands pydicom an already inflated copy (or refuses
it), `check_structure` refuses a data set with more elements, items or nesting than any film has.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io.source import format_bytes

_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_PREAMBLE = 132


@dataclass(frozen=True)
class Layout:
    """Where the data set starts in the bytes pydicom gets, and how it is encoded."""

    data: bytes
    offset: int
    implicit: bool
    little_endian: bool
    deflated: bool = False


def inflate_if_deflated(data: bytes, label: str, limits: Limits, *, has_preamble: bool) -> Layout:
    """The file as pydicom should read it: a deflated data set is inflated here, at most
    ``limits.max_inflated_bytes``, and its file meta rewritten to Explicit VR Little Endian.

    Raises:
        InputError: the data set inflates to more than the limit, or its compressed stream is damaged.
    """
    fp = DicomBytesIO(data)
    fp.seek(_PREAMBLE if has_preamble else 0)
    try:
        meta = _read_file_meta_info(fp)
    except Exception:  # a damaged meta group: pydicom says so in its own read
        return Layout(data, 0, implicit=False, little_endian=True)
    offset = fp.tell()
    syntax = meta.get("TransferSyntaxUID")
    if syntax != DeflatedExplicitVRLittleEndian:
        implicit, little = _encoding(syntax, data, offset)
        return Layout(data, offset, implicit=implicit, little_endian=little)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data[offset:], limits.max_inflated_bytes + 1)
    except zlib.error:
        raise InputError(
            f"{label} is a deflated DICOM file whose compressed data is damaged, so its image could not be "
            "read. Please export it again, uncompressed."
        ) from None
    if len(inflated) > limits.max_inflated_bytes or inflater.unconsumed_tail:
        raise InputError(
            f"{label} is a deflated DICOM file that expands to more than "
            f"{format_bytes(limits.max_inflated_bytes)}, more than any chest film needs, so meddx did not "
            "read it; please export it uncompressed."
        )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header = DicomBytesIO()
    write_file_meta_info(header, meta, enforce_standard=False)
    rebuilt = b"\0" * 128 + b"DICM" + header.getvalue()
    return Layout(rebuilt + inflated, len(rebuilt), implicit=False, little_endian=True, deflated=True)


def _encoding(syntax: str | None, data: bytes, offset: int) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the data set, guessed like pydicom when the meta does not say."""
    if syntax == ImplicitVRLittleEndian:
        return True, True
    if syntax == ExplicitVRBigEndian:
        return False, False
    if syntax is not None:
        return False, True
    vr = data[offset + 4 : offset + 6]
    if len(vr) == 2 and vr.isalpha() and vr.isupper():
        group = struct.unpack_from("<H", data, offset)[0] if len(data) >= offset + 2 else 0
        return False, group < 1024
    return True, True


def check_structure(layout: Layout, label: str, limits: Limits) -> None:
    """Walk the data set's element headers (never their values) and refuse it when it holds more than
    ``limits.max_data_elements`` elements, more than ``limits.max_sequence_items`` sequence items and
    encapsulated fragments, or sequences nested deeper than ``limits.max_sequence_depth``.

    A damaged or truncated structure is left for pydicom to refuse in its own words.
    """
    data, pos, end = layout.data, layout.offset, len(layout.data)
    endian = "<" if layout.little_endian else ">"
    tag_format, length_format, short_format = endian + "HH", endian + "I", endian + "H"
    elements = items = 0
    # One entry per open sequence: (its end, None up to a delimiter; whether its content is implicit VR)
    open_sequences: list[tuple[int | None, bool]] = []
    while pos + 8 <= end:
        while open_sequences and open_sequences[-1][0] is not None and pos >= open_sequences[-1][0]:
            open_sequences.pop()
        implicit = open_sequences[-1][1] if open_sequences else layout.implicit
        group, element = struct.unpack_from(tag_format, data, pos)
        tag = group << 16 | element
        if group == 0xFFFE:
            pos += 8
            if tag == _ITEM:
                items += 1
                if items > limits.max_sequence_items:
                    raise _too_many_items(label, limits)
            elif tag == _SEQUENCE_END and open_sequences and open_sequences[-1][0] is None:
                open_sequences.pop()
            elif tag not in (_ITEM_END, _SEQUENCE_END):
                return  # not a data set any more: pydicom will say it is damaged
            continue
        elements += 1
        if elements > limits.max_data_elements:
            raise InputError(
                f"{label} holds more than {limits.max_data_elements:,} DICOM data elements, far more than a "
                "film has, so meddx did not read it; please export the image again."
            )
        if implicit:
            vr, length, pos = None, struct.unpack_from(length_format, data, pos + 4)[0], pos + 8
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    return
                length, pos = struct.unpack_from(length_format, data, pos + 8)[0], pos + 12
            else:
                length, pos = struct.unpack_from(short_format, data, pos + 6)[0], pos + 8
        if length == _UNDEFINED and tag == _PIXEL_DATA:
            pos, items = _skip_fragments(data, pos, items, tag_format, length_format, label, limits)
        elif length == _UNDEFINED or vr == b"SQ" or (implicit and _is_sequence(tag)):
            inner_implicit = implicit or vr == b"UN"  # an undefined-length UN is an implicit VR sequence
            open_sequences.append((None if length == _UNDEFINED else pos + length, inner_implicit))
            if len(open_sequences) > limits.max_sequence_depth:
                raise InputError(
                    f"{label} nests DICOM sequences more than {limits.max_sequence_depth} deep, which no "
                    "film needs, so meddx did not read it; please export the image again."
                )
        else:
            pos += length


def _skip_fragments(
    data: bytes, pos: int, items: int, tag_format: str, length_format: str, label: str, limits: Limits
) -> tuple[int, int]:
    """Step over encapsulated pixel data fragment by fragment, counting them as items."""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from(tag_format, data, pos)
        length = struct.unpack_from(length_format, data, pos + 4)[0]
        pos += 8
        if (group << 16 | element) != _ITEM:
            break
        items += 1
        if items > limits.max_sequence_items:
            raise _too_many_items(label, limits)
        pos += length
    return pos, items


def _too_many_items(label: str, limits: Limits) -> InputError:
    return InputError(
        f"{label} holds more than {limits.max_sequence_items:,} DICOM sequence items or image fragments, far "
        "more than a film has, so meddx did not read it; please export the image again."
    )


def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False
