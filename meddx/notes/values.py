"""Numbers read from a note: age (and a sex letter), temperature in °C, SpO2 in %, pack-years."""

from __future__ import annotations

import re
from collections.abc import Iterator

from meddx.notes.lexicon import Lexicon
from meddx.notes.matches import Match, Part

_NUM = r"(\d{1,3}(?:\.\d{1,2})?)"
_AGE_RE = re.compile(
    r"(?<![\w.])(\d{1,3})\s*+-?\s*+(?:years?|yrs?|yr)\s*+-?\s*+old(?![^\W_])"
    r"|(?<![\w.])(\d{1,3})\s*+-?\s*+(?:yo|y/o|y\.o\.?)(?:\s*+([mf])(?![^\W_]))?(?![^\W_])"
    r"|(?<![^\W_])(?:aged?|age:)\s*+(\d{1,3})(?![\w.])"
)
_AGE_SEX_RE = re.compile(  # "58M"; not "28F chest drain"
    r"(?<![\w.])(\d{1,2})\s?([mf])(?![^\W_])"
    r"(?!\s*+(?:fr|french|chest|drain|catheter|tube|sheath|pigtail|cannula|ng))"
)
_UNIT = r"(celsius|fahrenheit|c|f)"
_DEGREE = r"(?:[°º˚]|deg(?:rees?)?\.?)"
_TEMP_RE = re.compile(  # possessive \s*+ everywhere: a long run of spaces must not backtrack
    r"(?<![^\W_'])(?:temperature|temp|tmax|t|febrile|pyrexial|fevers?)"
    r"\s*+(?:[:=]\s*+)?(?:(?:of|was|is|at|to|with)\s++)?"
    + _NUM
    + rf"(?:\s*+{_DEGREE})?(?:\s*+{_UNIT})?(?![^\W_])"
    + r"|(?<![\w.])"
    + _NUM
    + rf"\s*+(?:[°º˚](?:\s*+{_UNIT})?|deg(?:rees?)?\.?\s*+{_UNIT}|(c|f))(?![^\W_])"
)
_SPO2_RE = re.compile(
    r"(?<![^\W_])(?:spo2|spo₂|sp02|sao2|o2\s*+sats?|o2\s*+saturation|oxygen\s++saturations?|oxygen\s++sats?"
    r"|sats?|saturations?|saturating|pulse\s++ox(?:imetry)?|desaturat(?:ing|ed|ion)\s++to)"
    r"\s*+(?:[:=]\s*+)?(?:of|was|is|at|to)?\s*+"
    + _NUM
    + r"\s*+(?:%|(?=on\s++(?:ra|room\s++air|air)(?![^\W_])))"
)
_PACK_YEARS_RE = re.compile(
    r"(?<![\w.])(\d{1,3}(?:\.\d+)?)\s*+\+?\s*+-?\s*+(?:pack|pk)\s*+-?\s*+(?:years?|yrs?|yr)(?![^\W_])"
    r"(?:\s++(?:smoking\s++)?history(?:\s++of\s++smoking)?)?"
    r"|(?<![\w.])(\d{1,2}(?:\.\d+)?)\s*+(?:ppd|packs?\s++(?:per|a)\s++day)"
    r"\s++(?:for|x)\s*+(\d{1,2})\s*+(?:years?|yrs?)"
)


def value_matches(text: str, low: str, lex: Lexicon) -> Iterator[Match]:
    d = lex.definitions
    for m in _AGE_RE.finditer(low):
        age = int(m.group(1) or m.group(2) or m.group(4))
        if not 0 < age <= 120:
            continue
        parts = [Part(d["age"], m.start(), m.end(), float(age))]
        if m.group(3):
            sex = d["male"] if m.group(3) == "m" else d["female"]
            parts = [Part(d["age"], m.start(), m.start(3), float(age)), Part(sex, m.start(3), m.end(3))]
        yield Match(m.start(), m.end(), tuple(parts), immune=True)
    for m in _AGE_SEX_RE.finditer(low):
        if text[m.start(2)] in "MF" and int(m.group(1)) > 0:
            sex = d["male"] if m.group(2) == "m" else d["female"]
            parts = (
                Part(d["age"], m.start(1), m.end(1), float(m.group(1))),
                Part(sex, m.start(2), m.end(2)),
            )
            yield Match(m.start(), m.end(), parts, immune=True)
    for m in _TEMP_RE.finditer(low):
        raw = m.group(1) or m.group(3)
        unit = next((u for u in m.group(2, 4, 5, 6) if u), "")[:1]
        celsius = _celsius(float(raw), unit)
        if celsius is None:
            continue
        parts = [Part(d["temperature"], m.start(), m.end(), celsius)]
        if celsius >= 38.0:
            parts.append(Part(d["fever"], m.start(), m.end(), celsius))
        yield Match(m.start(), m.end(), tuple(parts), immune=True)
    for m in _SPO2_RE.finditer(low):
        value = float(m.group(1))
        if 50 <= value <= 100:
            yield Match(m.start(), m.end(), (Part(d["spo2"], m.start(), m.end(), value),), immune=True)
    for m in _PACK_YEARS_RE.finditer(low):
        value = float(m.group(1)) if m.group(1) else float(m.group(2)) * float(m.group(3))
        part = Part(d["smoking"], m.start(), m.end(), value)
        yield Match(m.start(), m.end(), (part,), fixed=None if value > 0 else "absent")


def _celsius(value: float, unit: str) -> float | None:
    """°C from a reading in °C or °F (unit ``c``, ``f`` or unknown); None when implausible."""
    if unit != "f" and 30.0 <= value <= 45.0:
        return value
    if unit != "c" and 86.0 <= value <= 113.0:
        return round((value - 32.0) * 5.0 / 9.0, 1)
    return None
