"""Payload bytes of the messages a round sends and receives, as ``metrics.jsonl`` reports them."""

from __future__ import annotations

from typing import Any, Iterable

from flwr.app import Message


def content_bytes(messages: Iterable[Message]) -> int:
    """Payload bytes of the records carried by ``messages`` (arrays, metrics, configs)."""
    return sum(record_bytes(record) for m in messages if m.has_content() for record in m.content.values())


def record_bytes(record: Any) -> int:
    """Bytes of a record; Flower's ``count_bytes`` fails on an empty list in a ConfigRecord
    (then: 8 bytes per scalar or list item plus the keys)."""
    try:
        return record.count_bytes()
    except (IndexError, ValueError):
        return sum(len(key) + (len(v) * 8 if isinstance(v, list) else 8) for key, v in record.items())
