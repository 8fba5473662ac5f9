"""Every figure in ``benchmarks/RESULTS.md`` can be traced to a committed JSON file.

Benchmarks write their results to ``benchmarks/results/``; RESULTS.md names the file each
table comes from. These checks keep that link from rotting: every cited file exists and
parses, every table is introduced by a citation, and no results file sits there uncited.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"
CITATION = re.compile(r"benchmarks/results/[A-Za-z0-9_.\-]+\.json")
HEADING = re.compile(r"^#{2,3} ")
TABLE_ROW = re.compile(r"^\s*\|")
MAX_BYTES = 256 * 1024  # the results folder is for small files only


def _text() -> str:
    return RESULTS_MD.read_text(encoding="utf-8")


def _cited() -> set[str]:
    return set(CITATION.findall(_text()))


def _sections() -> list[tuple[str, list[str]]]:
    """RESULTS.md split at ``##``/``###`` headings: (heading, lines) pairs."""
    sections: list[tuple[str, list[str]]] = [("(preamble)", [])]
    for line in _text().splitlines():
        if HEADING.match(line):
            sections.append((line.strip(), []))
        else:
            sections[-1][1].append(line)
    return sections


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    """(first line, end line) of each markdown table in ``lines``."""
    tables, start = [], None
    for i, line in enumerate([*lines, ""]):
        if TABLE_ROW.match(line):
            start = i if start is None else start
        elif start is not None:
            tables.append((start, i))
            start = None
    return tables


def test_results_md_cites_some_results() -> None:
    assert _cited(), f"{RESULTS_MD} cites no benchmarks/results/*.json"


@pytest.mark.parametrize("cited", sorted(_cited()))
def test_cited_json_exists_and_parses(cited: str) -> None:
    path = ROOT / cited
    assert path.is_file(), f"{RESULTS_MD.name} cites {cited}, which does not exist"
    assert path.stat().st_size <= MAX_BYTES, f"{cited} is over {MAX_BYTES} bytes"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        pytest.fail(f"{cited} is not valid JSON: {exc}")
    assert isinstance(data, dict) and data, f"{cited} holds no results object"


def test_every_table_is_introduced_by_a_citation() -> None:
    """Each table cites a JSON between the previous table (or its heading) and its end."""
    uncited = []
    for heading, lines in _sections():
        previous_end = 0
        for start, end in _tables(lines):
            if not CITATION.search("\n".join(lines[previous_end:end])):
                uncited.append(f"{heading!r}: table starting {lines[start].strip()[:60]!r}")
            previous_end = end
    assert not uncited, "tables without a benchmarks/results/*.json citation:\n" + "\n".join(
        uncited
    )


def test_every_results_section_cites_a_json() -> None:
    missing = [
        heading
        for heading, lines in _sections()
        if _tables(lines) and not CITATION.search("\n".join(lines))
    ]
    assert not missing, f"sections with tables but no JSON citation: {missing}"


def test_no_uncited_results_files() -> None:
    present = {f"benchmarks/results/{p.name}" for p in RESULTS_DIR.glob("*.json")}
    orphans = sorted(present - _cited())
    assert not orphans, f"results files that RESULTS.md does not cite: {orphans}"
