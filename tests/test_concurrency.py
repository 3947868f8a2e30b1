"""Two processes editing the same ladder and contact at once lose no update (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from escalator import clock, ladder_files
from escalator.ladders import add_leg
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from tests.conftest import CONTACTS_YAML, LADDER_YAML, write

EDITS = 9  # 1 + 2 × 9 push tokens stays within the 20 a contact may hold


def _worker(url: str, tag: str, start: mp.Event) -> None:  # runs in a separate process
    engine = make_engine(url)
    catalog = Catalog(engine)
    start.wait(30)
    for i in range(EDITS):
        leg = {"name": f"{tag}-{i}", "contacts": ["carol"]}
        catalog.edit_ladder("night", lambda lad, leg=leg: add_leg(lad, leg), tag, clock.now())
        token = f"{tag}-token-{i}"
        catalog.edit_contact(
            "alice", lambda c, t=token: c.model_copy(update={"push_tokens": (*c.push_tokens, t)}), tag, clock.now()
        )
    engine.dispose()


def test_two_processes_do_not_lose_updates(catalog: Catalog, db_url: str, tmp_path: Path) -> None:
    declared = ladder_files.load([write(tmp_path / "c.yaml", CONTACTS_YAML), write(tmp_path / "l.yaml", LADDER_YAML)])
    catalog.apply(declared, "setup", clock.now())
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_worker, args=(db_url, tag, start)) for tag in ("a", "b")]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    ladder = catalog.ladder("night")
    names = [leg.name for leg in ladder.definition.legs]
    assert sorted(n for n in names if "-" in n) == sorted(f"{t}-{i}" for t in "ab" for i in range(EDITS))
    assert ladder.version == 1 + 2 * EDITS
    assert [v.version for v in catalog.history("night")] == list(range(1, 2 + 2 * EDITS))
    tokens = catalog.contact_map()["alice"].push_tokens
    assert len(tokens) == 1 + 2 * EDITS
    # each process's own edits stay in its own order
    for tag in "ab":
        own = [n for n in names if n.startswith(f"{tag}-")]
        assert own == [f"{tag}-{i}" for i in range(EDITS)]
