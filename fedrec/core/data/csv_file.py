"""Any CSV file of interactions: ``user,item[,rating[,timestamp]]``.

* Ids may be any strings (they are re-indexed); ratings may be any positive finite
  number (stars, counts, dwell seconds); timestamps are integers (float strings such
  as ``"874965758.0"`` are accepted and truncated).
* A header is optional: the first line is a header when its first field, lowercased,
  is one of ``user``, ``user_id``, ``userid``, ``uid``, ``user id``.
* Every data line must have the same number of columns as the first data line
  (2, 3 or 4). A malformed line raises ``ValueError`` naming the file, the line
  number and what was expected; a file that is not UTF-8 text raises ``ValueError``
  naming the file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterator

from fedrec.core.data.interactions import Interactions

HEADER_FIRST_FIELDS = frozenset({"user", "user_id", "userid", "uid", "user id"})
COLUMN_LAYOUTS = {2: "user,item", 3: "user,item,rating", 4: "user,item,rating,timestamp"}


def load_csv(path: str | Path) -> Interactions:
    """Parse an interactions CSV file (see the module docstring for the format)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CSV dataset not found: {path}")
    try:
        with path.open("r", newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            columns = _read_columns(reader, path)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text CSV file (it holds bytes that UTF-8 cannot decode); "
                         "expected text lines user,item[,rating[,timestamp]]") from err
    except csv.Error as err:  # e.g. a NUL byte: a binary file that happens to decode
        raise ValueError(f"{path} line {reader.line_num}: not a text CSV line ({err})") from err
    except OSError as err:
        raise ValueError(f"{path}: cannot read the CSV file ({err.strerror or err})") from err
    users, items, ratings, timestamps = columns
    if not users:
        raise ValueError(f"{path}: no interactions found")
    return Interactions.from_raw(users, items, ratings, timestamps)


def _read_columns(
    reader: Iterator[list[str]], path: Path
) -> tuple[list[str], list[str], list[float] | None, list[int] | None]:
    """The user, item, rating and timestamp columns of the rows (ratings, timestamps: ``None``
    when the file has no such column)."""
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    timestamps: list[int] = []
    n_columns: int | None = None
    for line_number, row in enumerate(reader, start=1):
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
    has_ratings = n_columns is not None and n_columns >= 3
    return users, items, ratings if has_ratings else None, timestamps if n_columns == 4 else None


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
