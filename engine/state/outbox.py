"""The transactional outbox (SPEC §6): what a commit writes beside the states and offset, and what
the relays read back.

Each partition has one outbox, an ordered log of entries numbered from 1 (`seq`, without gaps
within one store). A commit appends the items the partition produced since the last commit
(triggers of every status, the events' dead letters) in the same atomic step as the states and
the offset behind them, so an item is in the outbox exactly when the state that produced it is
committed: a crash of the engine re-sends nothing. Each sink's relay keeps a cursor per partition,
the `seq` of the last entry it passed (delivered, dead-lettered, or not for it); entries that
every configured sink has passed are trimmed.

Entries carry the item already encoded (JSON, what a connector sends) and, beside it, what a
relay filters on without decoding: the kind, and a trigger's status.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from engine.actions.trigger import Trigger
from engine.events.decode import DeadLetter

__all__ = ["ItemKind", "OutboxEntry", "OutboxTail", "decode_item", "encode_items"]


class ItemKind(StrEnum):
    """What an outbox entry holds; the values are the entries' `kind` field in Redis."""

    TRIGGER = "trigger"
    DEAD_LETTER = "dead_letter"     # an event the engine could not use (`engine.events.decode.DeadLetter`)


class OutboxEntry(msgspec.Struct, frozen=True):
    """One item of a partition's outbox. `seq` is its place, from 1 (0 in an entry not yet
    committed: the store's commit numbers them); `status` a trigger's status, "" for a dead
    letter; `data` the item as JSON."""

    kind: ItemKind
    status: str
    data: bytes
    seq: int = 0


class OutboxTail(msgspec.Struct, frozen=True):
    """Where a partition's outbox stands: the `seq` of its last entry ever written (0: none)
    and how many entries it holds now (not yet passed by every sink)."""

    last_seq: int
    length: int


_encode = msgspec.json.Encoder().encode
_DECODERS: dict[ItemKind, msgspec.json.Decoder[Any]] = {
    ItemKind.TRIGGER: msgspec.json.Decoder(Trigger), ItemKind.DEAD_LETTER: msgspec.json.Decoder(DeadLetter)}


def encode_items(items: list[Trigger | DeadLetter]) -> list[OutboxEntry]:
    """The entries of a commit's items, in their order."""
    entries: list[OutboxEntry] = []
    for item in items:
        if isinstance(item, Trigger):
            entries.append(OutboxEntry(ItemKind.TRIGGER, str(item.status), _encode(item)))
        else:
            entries.append(OutboxEntry(ItemKind.DEAD_LETTER, "", _encode(item)))
    return entries


def decode_item(entry: OutboxEntry) -> Trigger | DeadLetter:
    """The item an entry holds, as its struct."""
    return _DECODERS[entry.kind].decode(entry.data)
