"""MovieLens 100K loader: reads ``u.data`` (user, item, rating, timestamp; tab-separated).

The data is not shipped (GroupLens terms forbid redistribution); users fetch it with
``fedrec data download ml-100k --dir DIR`` and pass ``--data-dir DIR``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrec.core.data.interactions import Interactions

U_DATA = "u.data"


def find_ml100k_file(data_dir: str | Path) -> Path:
    """Locate ``u.data`` in ``data_dir`` or in ``data_dir/ml-100k``."""
    if not str(data_dir):
        raise FileNotFoundError(
            "ml-100k needs --data-dir; fetch it with `fedrec data download ml-100k --dir DIR`"
        )
    base = Path(data_dir).expanduser()
    for candidate in (base / U_DATA, base / "ml-100k" / U_DATA):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {U_DATA} in {base} or {base / 'ml-100k'}; "
        "fetch it with `fedrec data download ml-100k --dir DIR`"
    )


def load_ml100k(data_dir: str | Path) -> Interactions:
    """Load MovieLens 100K from ``u.data`` with explicit ratings and timestamps."""
    path = find_ml100k_file(data_dir)
    rows = []
    with path.open("r", encoding="ascii") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 4:
                raise ValueError(
                    f"{path} line {line_number}: expected 4 tab-separated fields "
                    f"(user, item, rating, timestamp), found {len(fields)}"
                )
            try:
                rows.append(tuple(int(f) for f in fields))
            except ValueError as err:
                raise ValueError(
                    f"{path} line {line_number}: expected integers, found {line.strip()!r}"
                ) from err
    table = np.asarray(rows, dtype=np.int64)
    return Interactions.from_raw(table[:, 0], table[:, 1], table[:, 2], table[:, 3])
