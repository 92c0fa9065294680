"""Copying every record from one store to another (``cgr store migrate --to ...``)."""

from __future__ import annotations

from ._errors import CopyMismatch
from ._protocol import Store
from ._sql import COPIED_TABLES

__all__ = ["copy_store"]


def copy_store(source: Store, target: Store) -> dict[str, int]:
    """Copy runs, their events, processed triggers, cursors, agent sessions, the outbox and
    the HTTP cache from ``source`` into the empty ``target``; returns rows per table.

    The source is read in one consistent read transaction and the target written in one
    transaction, so a failure leaves the target as empty as it was. Then the target's
    counts are checked against what was read (CopyMismatch otherwise). Hosts and leaders
    are not copied: they describe processes running now, which start afresh on the target.
    Stop every cgr process using the source first: runs written after the read are not
    copied. Raises CopyTargetNotEmpty if the target already holds records.
    """
    tables = source.export_tables()
    target.import_tables(tables)
    copied = target.table_counts()
    for table in COPIED_TABLES:
        if copied[table] != len(tables[table]):
            raise CopyMismatch(table, len(tables[table]), copied[table])
    return copied
