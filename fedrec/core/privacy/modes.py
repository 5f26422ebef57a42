"""The DP modes' fixed facts, defined once: the unit each protects and its neighbouring relation.

``MODE_UNIT[mode]`` is the unit whose data one neighbouring step changes (``record``: one
interaction; ``user``: all of one user's data). ``MODE_RELATION[mode]`` is the relation the
mode's guarantee is stated under: ``add-remove`` (neighbours differ by one unit present or
absent) or ``replace-one`` (one unit's data replaced by another's). The privacy plan
(:mod:`fedrec.core.privacy.plan`) and the ledger (:mod:`fedrec.core.privacy.ledger_rows`)
both read them from here.
"""

from __future__ import annotations

# mode -> the unit it protects
MODE_UNIT: dict[str, str] = {"record": "record", "user-local": "user", "user-central": "user"}
# mode -> the neighbouring relation its guarantee is stated under
MODE_RELATION: dict[str, str] = {"record": "add-remove", "user-local": "replace-one", "user-central": "add-remove"}
