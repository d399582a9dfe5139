"""CSV bulk import of tracking numbers: checking every row, before anything is written.

Plain function over plain lookups, so the writer job that commits the rows
runs the very same checks as the preview, in one transaction: all rows or none.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from ppcswitch.storage import validate as v
from ppcswitch.storage.validate import ValidationError

COLUMNS = ("number", "campaign", "publisher")
MAX_ROWS = 100_000
MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Row:
    line: int
    number: str  # E.164
    campaign_id: int
    publisher_id: int


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str


@dataclass
class Checked:
    rows: list[Row]
    errors: list[RowError]


class ImportRejected(ValidationError):
    def __init__(self, checked: Checked):
        super().__init__("csv", f"{len(checked.errors)} row(s) have errors; nothing was imported")
        self.checked = checked


def check(text: str, campaigns: dict[str, int], publishers: dict[str, int], existing: set[str],
          region: str) -> Checked:
    """Rows of `text` (CSV with a header number,campaign,publisher; names as in the panel).

    Line numbers count the header as line 1, as a spreadsheet shows them.
    """
    errors: list[RowError] = []
    rows: list[Row] = []
    if len(text.encode()) > MAX_BYTES:
        return Checked([], [RowError(0, "csv", f"file is larger than {MAX_BYTES // (1024 * 1024)} MB")])
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return Checked([], [RowError(1, "csv", "the file is empty; expected a header: number,campaign,publisher")])
    except csv.Error as exc:
        return Checked([], [RowError(1, "csv", f"unreadable CSV: {exc}")])
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return Checked([], [RowError(1, "csv", f"header lacks {', '.join(missing)}; expected number,campaign,publisher")])
    idx = {c: header.index(c) for c in COLUMNS}
    seen: dict[str, int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(x.strip() for x in values):
                continue
            if len(rows) + len(errors) >= MAX_ROWS:
                errors.append(RowError(line, "csv", f"more than {MAX_ROWS} rows; split the file"))
                break
            cell = {c: (values[i].strip() if i < len(values) else "") for c, i in idx.items()}
            try:
                number = v.phone(cell["number"], region)
            except ValidationError as exc:
                errors.append(RowError(line, "number", exc.message))
                continue
            problem = None
            if number in existing:
                problem = ("number", f"{number} is already a tracking number")
            elif number in seen:
                problem = ("number", f"{number} is also on line {seen[number]}")
            elif cell["campaign"] not in campaigns:
                problem = ("campaign", f"no campaign named {cell['campaign'][:100]!r}")
            elif cell["publisher"] not in publishers:
                problem = ("publisher", f"no publisher named {cell['publisher'][:100]!r}")
            if problem:
                errors.append(RowError(line, *problem))
                continue
            seen[number] = line
            rows.append(Row(line, number, campaigns[cell["campaign"]], publishers[cell["publisher"]]))
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, "csv", f"unreadable CSV: {exc}"))
    if not rows and not errors:
        errors.append(RowError(1, "csv", "no rows after the header"))
    return Checked(rows, errors)
