"""The table the faults suite prints at the end of the session (and writes to a file)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.support.site import REPO

TABLE_FILE = REPO / ".dev" / "faults" / "table.txt"
COLUMNS = ("backend", "scenario", "injections", "expected", "present", "duplicated",
           "stuck", "lost", "errored", "seconds")


@dataclasses.dataclass
class Row:
    backend: str
    scenario: str
    injections: str
    expected: int = 0
    present: int = 0
    duplicated: int = 0
    stuck: int = 0
    lost: int = 0
    errored: int = 0
    seconds: float = 0.0
    verdict: str = "?"

    def cells(self) -> list[str]:
        values = dataclasses.asdict(self)
        return [f"{values[c]:.0f}" if c == "seconds" else str(values[c])
                for c in COLUMNS] + [self.verdict]


#: Rows of the scenarios run in this session, in order.
RESULTS: list[Row] = []


def table(rows: list[Row]) -> str:
    header = list(COLUMNS) + ["verdict"]
    lines = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {"expected", "present", "duplicated", "stuck", "lost", "errored", "seconds"}

    def fmt(line: list[str]) -> str:
        return "  ".join(cell.rjust(w) if name in numeric else cell.ljust(w)
                         for cell, w, name in zip(line, widths, header)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    total = sum(row.seconds for row in rows)
    return "\n".join([fmt(header), rule] + [fmt(line) for line in lines[1:]]
                     + [rule, f"{len(rows)} scenario run(s), {total:.0f} s of harvesting"])


def write(rows: list[Row], path: Path = TABLE_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table(rows) + "\n")
    path.with_suffix(".json").write_text(
        json.dumps([dataclasses.asdict(row) for row in rows], indent=1) + "\n")
    return path
