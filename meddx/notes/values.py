"""Numbers read from a note: age (and a sex letter), temperature in °C, SpO2 in %, respiratory rate and heart
rate per minute, blood pressure in mmHg, pack-years. A temperature of 38 °C or more is also a fever, and
a respiratory rate of 22/min or more also tachypnoea (the qSOFA threshold: Seymour et al., JAMA 2016)."""

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
# Possessive \s*+ everywhere: a long run of spaces must not backtrack. A pattern starts with a literal and
# checks what comes before it with fixed-width look-behinds after it: Python's re skips ahead to a
# literal first character, but tries a leading look-behind at every position (about 20x slower).
_TEMP_RE = re.compile(
    r"(?:temperature|temp|tmax|t|febrile|pyrexial|fevers?)"  # each word not inside a longer one:
    r"(?<![^\W_']temperature)(?<![^\W_']temp)(?<![^\W_']tmax)(?<![^\W_']t)(?<![^\W_']febrile)"
    r"(?<![^\W_']pyrexial)(?<![^\W_']fever)(?<![^\W_']fevers)"
    r"\s*+(?:[:=]\s*+)?(?:(?:of|was|is|at|to|with)\s++)?"
    + _NUM
    + rf"(?:\s*+{_DEGREE})?(?:\s*+{_UNIT})?(?![^\W_])"
    + r"|(\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,2})?)"  # _NUM, not inside a longer number or word
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


_RR_RE = re.compile(
    r"(?<![^\W_])(?:rr|resp(?:iratory)?\.?\s*+rate|resps?|respirations?|breathing\s++rate)"
    r"\s*+(?:[:=]\s*+)?(?:(?:of|was|is|at|to)\s++)?(\d{1,2})(?!\d|\.\d)"
    r"(?:\s*+(?:/\s*+min(?:ute)?|bpm|breaths?\s*+(?:/|per)\s*+min(?:ute)?|per\s++min(?:ute)?))?(?![^\W_])"
)
_HR_RE = re.compile(
    r"(?<![^\W_])(?:hr|heart\s++rate|pulse(?:\s++rate)?)\s*+(?:[:=]\s*+)?(?:(?:of|was|is|at|to)\s++)?"
    r"(\d{2,3})(?!\d|\.\d|/)(?:\s*+(?:/\s*+min(?:ute)?|bpm|beats?\s*+(?:/|per)\s*+min(?:ute)?))?(?![^\W_])"
)
_BP_RE = re.compile(
    r"(?<![^\W_])(?:bp|nibp|blood\s++pressure)\s*+(?:[:=]\s*+)?(?:(?:of|was|is|at)\s++)?"
    r"(\d{2,3})\s*+/\s*+(\d{2,3})(?!\d|\.\d)(?:\s*+mm\s*+hg)?(?![^\W_])"
)
TACHYPNOEA_RR = 22
_DIGIT = re.compile(r"\d")


def _vitals(low: str, lex: Lexicon) -> Iterator[Match]:
    d = lex.definitions
    for m in _RR_RE.finditer(low) if ("rr" in low or "resp" in low or "breathing" in low) else ():
        rate = float(m.group(1))
        if 4 <= rate <= 80:
            parts = [Part(d["respiratory_rate"], m.start(), m.end(), rate)]
            if rate >= TACHYPNOEA_RR:
                parts.append(Part(d["tachypnoea"], m.start(), m.end(), rate))
            yield Match(m.start(), m.end(), tuple(parts), immune=True)
    for m in _HR_RE.finditer(low) if ("hr" in low or "heart" in low or "pulse" in low) else ():
        rate = float(m.group(1))
        if 20 <= rate <= 250:
            yield Match(m.start(), m.end(), (Part(d["heart_rate"], m.start(), m.end(), rate),), immune=True)
    for m in _BP_RE.finditer(low) if ("bp" in low or "pressure" in low) else ():
        systolic, diastolic = float(m.group(1)), float(m.group(2))
        if 40 <= systolic <= 300 and 20 <= diastolic < systolic:
            part = Part(d["blood_pressure"], m.start(), m.end(), systolic, diastolic)
            yield Match(m.start(), m.end(), (part,), immune=True)


def value_matches(text: str, low: str, lex: Lexicon) -> Iterator[Match]:
    if not _DIGIT.search(low):  # every value has a digit
        return
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
    yield from _vitals(low, lex)


def _celsius(value: float, unit: str) -> float | None:
    """°C from a reading in °C or °F (unit ``c``, ``f`` or unknown); None when implausible."""
    if unit != "f" and 30.0 <= value <= 45.0:
        return value
    if unit != "c" and 86.0 <= value <= 113.0:
        return round((value - 32.0) * 5.0 / 9.0, 1)
    return None
