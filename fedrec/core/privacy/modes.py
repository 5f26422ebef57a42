"""The DP modes' fixed facts, defined once: the unit each protects and its neighbouring relation.

``MODE_UNIT[mode]`` is the unit whose data one neighbouring step changes (``record``: one
interaction; ``user``: all of one user's data). ``MODE_RELATION[mode]`` is the relation the
mode's guarantee is stated under: ``add-remove`` (neighbours differ by one unit present or
absent), ``replace-one`` (one unit's data replaced by another's) or ``zero-out`` (one
unit's data replaced by nothing — the zero update — while the unit still takes part).
``MODE_ADVERSARY[mode]`` says whom the guarantee holds against. The privacy plan
(:mod:`fedrec.core.privacy.plan`) and the ledger (:mod:`fedrec.core.privacy.ledger_rows`)
both read them from here.

``user-distributed`` (:mod:`fedrec.core.privacy.distributed_mode`): every sampled client
clips its update, quantises it and adds its own share of discrete Gaussian noise; secure
aggregation reveals only the sum modulo ``2^bits``. Relation: **zero-out add/remove of one
user's data** (Kairouz, Liu & Steinke 2021; :mod:`fedrec.core.privacy.distributed_accounting`):
the neighbouring world has the same participants and the user's update is the zero vector
(its device still sends a noise share). Which users took part in a round is *not*
protected (the server sees who sent a vector); what they sent is. Adversary: an
**honest-but-curious server** that follows the protocol and sees only each round's
modular sum and the participants, plus whoever reads what it releases; the ``n_min``
clients whose noise is counted add their share honestly.

``record-distributed`` (:mod:`fedrec.core.privacy.record_distributed`): every round is one
gradient step over every record of every client taking part; each record's clipped gradient
is rounded, summed on its device with the device's discrete noise share and aggregated
securely; the local part moves with the device's own Gaussian noise. Relation: **add/remove
one record**, the same clients taking part in both worlds. Adversary: as under
``user-distributed``, and whoever sees a device's local parameters.
"""

from __future__ import annotations

# mode -> the unit it protects
MODE_UNIT: dict[str, str] = {"record": "record", "user-local": "user", "user-central": "user",
                             "user-distributed": "user", "record-distributed": "record"}
# mode -> the neighbouring relation its guarantee is stated under
MODE_RELATION: dict[str, str] = {"record": "add-remove", "user-local": "replace-one", "user-central": "add-remove",
                                 "user-distributed": "zero-out", "record-distributed": "add-remove"}
# mode -> whom the guarantee holds against
MODE_ADVERSARY: dict[str, str] = {
    "record": "the server and whoever reads the run folder (each client runs DP-SGD on its device)",
    "user-local": "the server, seeing one user's release alone",
    "user-central": "whoever sees the released models and files, not the (trusted) server",
    "user-distributed": "an honest-but-curious server that sees only each round's modular sum and who took part",
    "record-distributed": "an honest-but-curious server that sees only each round's modular sum and who took part, "
                          "and anyone who sees a device's local parameters (they move only through noised sums)",
}
