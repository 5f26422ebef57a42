"""The two ways a SecAgg+ round stops early.

* :class:`RoundCannotBeUnmasked` (server side): too few clients are left to reach the
  reconstruction threshold ``t`` for a secret the unmasking needs. The round's sum is lost;
  nothing about any individual input is revealed by giving up.
* :class:`ProtocolViolation` (client side): a request breaks the protocol — wrong stage
  order, a neighbour the public graph does not give, a share that does not decrypt, a
  vector of the wrong shape. :class:`UnmaskRequestRefused` is the one that protects the
  client's privacy against the server: it is raised when the unmask request would hand
  the server both secrets of one node (see :mod:`fedrec.secure_aggregation.client`).
"""

from __future__ import annotations


class RoundCannotBeUnmasked(RuntimeError):
    """Fewer than ``t`` holders remain for a secret the server must reconstruct."""


class ProtocolViolation(ValueError):
    """A client refuses a request that does not follow the SecAgg+ protocol."""


class UnmaskRequestRefused(ProtocolViolation):
    """A client refuses an unmask request that would reveal an individual input."""
