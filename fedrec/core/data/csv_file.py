"""Any CSV file of interactions: ``user,item[,rating[,timestamp]]``.

* Ids may be any strings (they are re-indexed); ratings may be any positive finite
  number (stars, counts, dwell seconds); timestamps are integers (float strings such
  as ``"874965758.0"`` are accepted and truncated).
* A header is optional: the first line is a header when its first field, lowercased,
  is one of ``user``, ``user_id``, ``userid``, ``uid``, ``user id``.
* Every data line must have the same number of columns as the first data line
  (2, 3 or 4). A malformed line raises ``ValueError`` naming the file, the line
  number and what was expected.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fedrec.core.data.interactions import Interactions

HEADER_FIRST_FIELDS = frozenset({"user", "user_id", "userid", "uid", "user id"})
COLUMN_LAYOUTS = {2: "user,item", 3: "user,item,rating", 4: "user,item,rating,timestamp"}


def load_csv(path: str | Path) -> Interactions:
    """Parse an interactions CSV file (see the module docstring for the format)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CSV dataset not found: {path}")
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    timestamps: list[int] = []
    n_columns: int | None = None
    with path.open("r", newline="", encoding="utf-8-sig") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            fields = [f.strip() for f in row]
            if not fields or all(f == "" for f in fields):
                continue
            if line_number == 1 and fields[0].lower() in HEADER_FIRST_FIELDS:
                continue
            if n_columns is None:
                if len(fields) not in COLUMN_LAYOUTS:
                    raise ValueError(
                        f"{path} line {line_number}: expected 2 to 4 columns "
                        f"(user,item[,rating[,timestamp]]), found {len(fields)}"
                    )
                n_columns = len(fields)
            elif len(fields) != n_columns:
                raise ValueError(
                    f"{path} line {line_number}: expected {n_columns} columns "
                    f"({COLUMN_LAYOUTS[n_columns]}) like the first data line, found {len(fields)}"
                )
            if fields[0] == "" or fields[1] == "":
                raise ValueError(f"{path} line {line_number}: empty user or item id")
            users.append(fields[0])
            items.append(fields[1])
            if n_columns >= 3:
                ratings.append(_parse_rating(fields[2], path, line_number))
            if n_columns == 4:
                timestamps.append(_parse_timestamp(fields[3], path, line_number))
    if not users:
        raise ValueError(f"{path}: no interactions found")
    return Interactions.from_raw(
        users,
        items,
        ratings if n_columns and n_columns >= 3 else None,
        timestamps if n_columns == 4 else None,
    )


def _parse_rating(text: str, path: Path, line_number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{path} line {line_number}: expected a positive number as rating (column 3), "
            f"found {text!r}"
        )
    return value


def _parse_timestamp(text: str, path: Path, line_number: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(
            f"{path} line {line_number}: expected an integer timestamp (column 4), found {text!r}"
        )
    return int(value)
