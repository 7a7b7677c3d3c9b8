"""``python -m meddx notes``: read clinical notes and print the concepts found.

    python -m meddx notes "TEXT"            a table, one concept a line
    python -m meddx notes "TEXT" --json     a JSON list of concepts
    python -m meddx notes --jsonl < in      JSON lines {"id", "text"} in, one JSON line per input out:
                                            {"id", "findings": {finding: status}, "concepts": [...]}
    python -m meddx notes-eval [PATH]       precision and recall on a labelled sentence set
                                            (`meddx.notes_eval`; default: tests/data/note_sentences.jsonl)

With no TEXT and no ``--jsonl`` the notes are read from standard input. In ``--jsonl`` output a line that
cannot be read gives ``{"id": ..., "error": "..."}`` and the run goes on; ``findings`` holds the image
findings the notes mention, with one status each (`meddx.notes.finding_statuses`: present >
uncertain > historical > absent; family-history mentions are left out). Nothing is logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from meddx.errors import InputError
from meddx.notes import MAX_CHARS, Concept, extract_concepts, finding_statuses

EXIT_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m meddx notes",
        description="Find findings, symptoms, risk factors and history in clinical notes, with their status "
        "(present, absent, uncertain, historical, no_history, family, hypothetical).",
    )
    parser.add_argument("text", nargs="?", help="the notes (default: read standard input)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of concepts")
    out.add_argument(
        "--jsonl",
        action="store_true",
        help='read JSON lines {"id": ..., "text": ...} from standard input; write one JSON line per input',
    )
    parser.add_argument(
        "--max-chars", type=int, default=MAX_CHARS, help=f"longest note accepted (default {MAX_CHARS})"
    )
    return parser


def _table(concepts: list[Concept]) -> str:
    if not concepts:
        return "No concepts found."
    rows = []
    for c in concepts:
        value = f"  ({c.describe()})" if c.value is not None or c.duration_days is not None else ""
        supports = f"  -> {', '.join(c.supports)}" if c.supports and c.category != "finding" else ""
        rows.append(
            f"{c.status:<13}{c.category:<12}{c.display:<28}[{c.start}:{c.end}] {c.text!r}{value}{supports}"
        )
    return "\n".join(rows)


def _jsonl(lines: TextIO, out: TextIO, max_chars: int) -> int:
    """Process JSON lines; returns how many lines failed."""
    failures = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record_id = None
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"line {number}: not valid JSON.") from None
            if not isinstance(record, dict):
                raise InputError(f'line {number}: expected an object {{"id": ..., "text": ...}}.')
            record_id = record.get("id")
            text = record.get("text")
            if not isinstance(text, str):
                raise InputError(f'line {number}: "text" must be a string.')
            concepts = extract_concepts(text, max_chars=max_chars)
            result = {
                "id": record_id,
                "findings": finding_statuses(concepts),
                "concepts": [c.to_dict() for c in concepts],
            }
        except InputError as exc:
            failures += 1
            result = {"id": record_id, "error": str(exc)}
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return failures


def run_notes(argv: list[str]) -> int:
    """Run ``notes`` with the arguments after the sub-command; returns the exit status.

    0 on success; 2 when the notes cannot be read (the message goes to stderr) or, with ``--jsonl``, when
    any line failed (each failure is still reported on its own output line).
    """
    args = _parser().parse_args(argv)
    if args.jsonl:
        if args.text is not None:
            print("meddx notes: give TEXT or --jsonl, not both.", file=sys.stderr)
            return EXIT_INPUT
        return EXIT_INPUT if _jsonl(sys.stdin, sys.stdout, args.max_chars) else 0
    text = args.text if args.text is not None else sys.stdin.read()
    try:
        concepts = extract_concepts(text, max_chars=args.max_chars)
    except InputError as exc:
        print(f"meddx notes: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(json.dumps([c.to_dict() for c in concepts], ensure_ascii=False, indent=2))
    else:
        print(_table(concepts))
    return 0


__all__ = ["run_notes"]


def run_notes_eval(argv: list[str]) -> int:
    """Print `meddx.notes_eval`'s report for the labelled set at ``argv[0]`` (default: the repository's)."""
    from pathlib import Path

    from meddx.dev.notes_eval import (
        DEFAULT_PATH,
        against,
        evaluate,
        format_report,
        format_speed,
        load_examples,
        speed,
        worst_case,
    )

    parser = argparse.ArgumentParser(
        prog="python -m meddx notes-eval", description="Measure the notes reader on a labelled sentence set."
    )
    parser.add_argument(
        "path", nargs="?", type=Path, default=DEFAULT_PATH, help="JSON lines with expected statuses"
    )
    parser.add_argument(
        "--speed",
        type=int,
        metavar="N",
        default=0,
        help="also time the reader on N report-length notes made of the set's sentences (budget: "
        "4,000 in 10 s on one core), beside a sentence-regex baseline",
    )
    parser.add_argument(
        "--worst-case",
        action="store_true",
        help=f'also time the longest note accepted ({MAX_CHARS:,} characters of "no effusion, ")',
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="also time this checkout against another one, in one run (make one with "
        "`git archive COMMIT meddx | tar -x -C /tmp/old`)",
    )
    args = parser.parse_args(argv)
    if not args.path.is_file():
        print(f"meddx: no such file: {args.path}", file=sys.stderr)
        return EXIT_INPUT
    examples = load_examples(args.path)
    print(format_report(evaluate(examples), len(examples)))
    if args.speed > 0:
        print(format_speed(speed(examples, n=args.speed)))
    if args.worst_case:
        print(f'{MAX_CHARS:,} characters of "no effusion, ": {worst_case():.3f} s (best of 3)')
    if args.against is not None:
        if not (args.against / "meddx" / "notes").is_dir():
            print(f"meddx: no meddx checkout at {args.against}", file=sys.stderr)
            return EXIT_INPUT
        print(against(args.against, examples))
    return 0
