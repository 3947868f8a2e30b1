"""One write transaction of the step path, and what the steps in it share — typed, so nothing is
passed around under string keys.

Steps write through it: `insert` queues a row to go in with the others of its table in one
`executemany` just before the commit (a group commit writes hundreds of timeline, outbox, page and
code rows), `execute` runs a write at once; both count `writes`, which the group commit uses to
check its contract (a step that refuses raises before writing anything). `before_commit` hooks run
after every step of the transaction, in order, then the queued rows are written, then it commits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from escalator.store.db import write_session


@dataclass
class Tx:
    session: Session
    writes: int = 0
    ladder_heads: dict[str, Any] = field(default_factory=dict)  # name → (version, deleted_at), read once per transaction
    contacts: dict[str, Any] = field(default_factory=dict)  # id → Contact or None, read once per transaction
    opted_out: set[str] = field(default_factory=set)  # of those contacts, whose number opted out of SMS
    rosters: dict[str, Any] = field(default_factory=dict)  # schedule → (schedule, overrides) or None (escalator.store.rosters)
    code_requests: list[Any] = field(default_factory=list)  # SMS pages whose reply codes are allocated before commit
    codes_given: dict[str, set[str]] = field(default_factory=dict)  # phone → codes given in this transaction
    _rows: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)
    _hooks: list[Callable[[Tx], None]] = field(default_factory=list)

    def insert(self, table: sa.Table, row: dict[str, Any]) -> None:
        self._rows.setdefault(table, []).append(row)
        self.writes += 1

    def execute(self, statement: Any, params: Any = None) -> Any:
        """A write that must happen now (its result is needed, or later statements depend on it)."""
        self.writes += 1
        return self.session.execute(statement, params)

    def read(self, statement: Any, params: Any = None) -> Any:
        return self.session.execute(statement, params)

    def changes(self) -> tuple[int, int, int, int, int]:
        """What this transaction has written so far, in every way a step can write: through
        `insert`/`execute`, queued hooks, and objects added or changed in the session."""
        s = self.session
        return self.writes, len(self._hooks), len(s.new), len(s.dirty), len(s.deleted)

    def before_commit(self, hook: Callable[[Tx], None]) -> None:
        if hook not in self._hooks:
            self._hooks.append(hook)

    def finish(self) -> None:
        for hook in self._hooks:
            hook(self)
        for table, rows in self._rows.items():
            self.session.execute(_insert(table), rows)
        self._rows.clear()


@functools.cache
def _insert(table: sa.Table) -> sa.Insert:
    return sa.insert(table)


@contextmanager
def write_tx(engine: Engine) -> Iterator[Tx]:
    """A Tx committed when the block ends (after its hooks and queued rows), rolled back on any exception."""
    with write_session(engine) as session, session.no_autoflush:
        tx = Tx(session)
        yield tx
        tx.finish()
