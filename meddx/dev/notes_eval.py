"""Measure the notes reader on a labelled sentence set (``python -m meddx notes-eval [PATH]``).

The set is JSON lines ``{"id": ..., "text": ..., "expected": {"<concept>": "<status>", ...}}`` where
``expected`` lists every concept the sentence mentions (demographics and vitals are left out: their
values are tested separately). Several mentions of one concept are reduced to one status with the
precedence of `meddx.notes.PRECEDENCE`.

Printed: precision, recall and F1 per status over (sentence, concept) pairs; per expected status, how many
targets the reader recognised at all and how many of those it gave the right status; and the macro-F1 of
"present" versus anything else for ten common findings. Sentences are never printed, only their ids.
`worst_case` times the longest note accepted, made of one repeated phrase.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from meddx.dev import REPO_ROOT
from meddx.notes import MAX_CHARS, STATUSES, Concept, extract_concepts, strongest

DEFAULT_PATH = REPO_ROOT / "tests" / "data" / "note_sentences.jsonl"
COMMON_FINDINGS = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "effusion",
    "pneumonia",
    "pneumothorax",
    "nodule",
    "mass",
    "fracture",
)
_SKIPPED = frozenset({"demographic", "vital"})


@dataclass(frozen=True)
class Example:
    """One labelled sentence."""

    id: str
    text: str
    expected: dict[str, str]


@dataclass(frozen=True)
class Score:
    """Precision, recall and F1 from counts."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class Report:
    """What `evaluate` measured; ``errors`` holds (id, concept, expected, predicted) for every miss."""

    per_status: dict[str, Score]
    per_finding: dict[str, Score]
    errors: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    recognised: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """Per expected status: (targets, recognised with any status, recognised with this status)."""

    @property
    def macro_f1(self) -> float:
        """Mean F1 of "present" over `COMMON_FINDINGS`."""
        return sum(s.f1 for s in self.per_finding.values()) / len(self.per_finding)


def load_examples(path: Path) -> list[Example]:
    """Read a JSON-lines sentence set."""
    examples = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                examples.append(Example(str(row["id"]), row["text"], dict(row["expected"])))
    return examples


def statuses(concepts: list[Concept]) -> dict[str, str]:
    """One status per concept name (demographics and vitals left out), by `meddx.notes.PRECEDENCE`."""
    mentions: dict[str, list[str]] = {}
    for c in concepts:
        if c.category not in _SKIPPED:
            mentions.setdefault(c.name, []).append(c.status)
    return {name: strongest(found) for name, found in mentions.items()}


def evaluate(examples: list[Example]) -> Report:
    """Run the extractor on every example and count agreements per status and per finding."""
    counts = {s: Counter() for s in STATUSES}
    findings = {f: Counter() for f in COMMON_FINDINGS}
    seen: dict[str, Counter] = {}
    errors = []
    for example in examples:
        predicted = statuses(extract_concepts(example.text))
        for name in sorted(set(predicted) | set(example.expected)):
            want, got = example.expected.get(name), predicted.get(name)
            if want:
                tally = seen.setdefault(want, Counter())
                tally["n"] += 1
                tally["found"] += got is not None
                tally["right"] += want == got
                counts.setdefault(want, Counter())
            if got:
                counts.setdefault(got, Counter())
            if want == got:
                counts[want]["tp"] += 1
                continue
            errors.append((example.id, name, want, got))
            if got:
                counts[got]["fp"] += 1
            if want:
                counts[want]["fn"] += 1
        for name, tally in findings.items():
            want, got = example.expected.get(name) == "present", predicted.get(name) == "present"
            tally["tp" if want and got else "fp" if got else "fn" if want else "tn"] += 1
    return Report(
        per_status={s: Score(c["tp"], c["fp"], c["fn"]) for s, c in counts.items()},
        per_finding={f: Score(c["tp"], c["fp"], c["fn"]) for f, c in findings.items()},
        errors=errors,
        recognised={s: (c["n"], c["found"], c["right"]) for s, c in sorted(seen.items())},
    )


def format_report(report: Report, n_examples: int) -> str:
    """The tables `main` prints."""
    lines = [f"{n_examples} sentences", "", f"{'status':<12}{'precision':>10}{'recall':>8}{'f1':>7}{'n':>6}"]
    for status, s in report.per_status.items():
        lines.append(f"{status:<12}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>7.3f}{s.tp + s.fn:>6}")
    lines += [
        "",
        f"{'expected':<14}{'targets':>8}{'recognised':>11}{'right status':>13}{'of recognised':>14}",
    ]
    for status, (n, found, right) in report.recognised.items():
        share = f"{right / found:.3f}" if found else "-"
        lines.append(f"{status:<14}{n:>8}{found:>11}{right:>13}{share:>14}")
    if report.recognised:
        n, found = (sum(v[i] for v in report.recognised.values()) for i in (0, 1))
        lines.append(f"{'all':<14}{n:>8}{found:>11}  ({found / n:.0%} recognised)")
    lines += ["", f"{'finding present':<16}{'precision':>10}{'recall':>8}{'f1':>7}{'n':>6}"]
    for finding, s in report.per_finding.items():
        lines.append(f"{finding:<16}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>7.3f}{s.tp + s.fn:>6}")
    lines += ["", f"macro-F1 (finding present, {len(report.per_finding)} findings): {report.macro_f1:.3f}"]
    if report.errors:
        lines += ["", "disagreements (id, concept, expected, predicted):"]
        lines += [f"  {i} {name}: {want} -> {got}" for i, name, want, got in report.errors]
    return "\n".join(lines)


_NEGEX_LITE = re.compile(
    r"\b(no|not|without|negative for|free of|clear of|resolved|resolution of|no evidence of|rule out|"
    r"ruled out|absence of|removed)\b"
)


@dataclass(frozen=True)
class Speed:
    """`speed`'s measurement: the notes reader and a sentence-regex baseline on the same notes."""

    notes: int
    mean_chars: int
    seconds: float
    baseline_seconds: float
    concepts: int


def speed(examples: list[Example], *, n: int = 4000, min_chars: int = 600, seed: int = 0) -> Speed:
    """Time `extract_concepts` on ``n`` report-length notes made of the labelled sentences (one thread).

    The baseline is a NegEx-style sentence regex over the same notes (for each sentence, a negation word
    before the first mention of any of ten finding words): it reads far less, and it puts the reader's
    cost in proportion on the same machine in the same run.
    """
    rng = random.Random(seed)
    sentences = [e.text for e in examples]
    notes = []
    for _ in range(n):
        parts: list[str] = []
        while sum(map(len, parts)) < min_chars:
            parts.append(rng.choice(sentences))
        notes.append(" ".join(parts))
    start = time.perf_counter()
    found = sum(len(extract_concepts(note)) for note in notes)
    seconds = time.perf_counter() - start
    words = ("pneumothorax", "effusion", "cardiomegaly", "consolidation", "edema", "atelectasis")
    words += ("pneumonia", "nodule", "emphysema", "fracture")
    start = time.perf_counter()
    for note in notes:
        for sentence in re.split(r"(?<=[.;])\s+", note.lower()):
            for word in words:
                i = sentence.find(word)
                if i >= 0:
                    _NEGEX_LITE.search(sentence[:i])
    baseline = time.perf_counter() - start
    return Speed(n, sum(map(len, notes)) // n, seconds, baseline, found)


def worst_case(*, phrase: str = "no effusion, ", chars: int = MAX_CHARS, repeat: int = 3) -> float:
    """Seconds to read the longest note accepted made of one repeated ``phrase`` (best of ``repeat``)."""
    note = (phrase * (chars // len(phrase) + 1))[:chars]
    extract_concepts("warm-up: the vocabulary is compiled once per process")
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        extract_concepts(note)
        best = min(best, time.perf_counter() - start)
    return best


def format_speed(result: Speed, *, budget_s: float = 10.0) -> str:
    """One line: notes per second, the baseline beside it, and the budget (4,000 notes in 10 s)."""
    verdict = "within" if result.seconds <= budget_s * result.notes / 4000 else "OVER"
    return (
        f"{result.notes} notes of ~{result.mean_chars} chars: meddx {result.seconds:.2f} s "
        f"({result.notes / result.seconds:,.0f} notes/s, {result.concepts} concepts); "
        f"NegEx-lite regex {result.baseline_seconds:.2f} s; "
        f"{verdict} the budget of {budget_s * result.notes / 4000:.1f} s"
    )


_VERSION_BENCH = """
import json, random, time
from meddx.notes import extract_concepts
extract_concepts("warm-up")
rng, sentences = random.Random(0), json.loads(input())
notes = []
for _ in range(4000):
    parts = []
    while sum(map(len, parts)) < 600:
        parts.append(rng.choice(sentences))
    notes.append(" ".join(parts))
cpu = time.process_time()
for note in notes:
    extract_concepts(note)
cpu = time.process_time() - cpu
worst = ("no effusion, " * 1600)[:20000]
start = time.process_time()
extract_concepts(worst)
print(json.dumps({"cpu": cpu, "worst": time.process_time() - start}))
"""


def against(other_root: Path, examples: list[Example], *, rounds: int = 2) -> str:
    """This checkout against another (``git archive COMMIT meddx | tar -x -C /tmp/old``), in one run: CPU
    seconds for 4,000 report-length notes and for the 20,000-character worst case, each version in its
    own process, alternating (CPU time, because a shared machine inflates wall time)."""
    sentences = json.dumps([e.text for e in examples])
    lines = []
    for number in range(1, rounds + 1):
        for name, root in (("other", Path(other_root)), ("this", REPO_ROOT)):
            env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(
                [sys.executable, "-c", _VERSION_BENCH],
                input=sentences,
                capture_output=True,
                text=True,
                env=env,
                cwd=root,
                check=True,
            )
            got = json.loads(done.stdout.splitlines()[-1])
            lines.append(
                f"round {number} {name} ({root}): 4,000 notes {got['cpu']:.2f} s CPU; "
                f'20,000 characters of "no effusion, " {got["worst"]:.3f} s CPU'
            )
    return "\n".join(lines)
