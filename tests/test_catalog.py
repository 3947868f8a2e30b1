"""Ladders and contacts in the database, on SQLite and PostgreSQL: versions, all-or-nothing, rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from escalator import ladder_files
from escalator.errors import InvalidInput
from escalator.ladders import Contact, set_leg, swap_contacts
from escalator.store.catalog import Catalog
from tests.conftest import CONTACTS_YAML, LADDER_YAML, write

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def declare(tmp_path: Path, *texts: str):
    paths = [write(tmp_path / f"f{i}.yaml", t) for i, t in enumerate(texts)]
    return ladder_files.load(paths)


def table_counts(catalog: Catalog) -> dict[str, int]:
    with catalog.engine.connect() as c:
        return {
            t: c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("contacts", "contact_versions", "ladders", "ladder_versions")
        }


def test_apply_creates_then_is_idempotent(catalog: Catalog, tmp_path: Path) -> None:
    declared = declare(tmp_path, CONTACTS_YAML, LADDER_YAML)
    report = catalog.apply(declared, "ops", T0)
    assert {c["outcome"] for c in report.contacts} == {"created"}
    assert report.ladders == [{"name": "night", "outcome": "created", "version": 1}]
    again = catalog.apply(declared, "ops", T0 + timedelta(minutes=1))
    assert {c["outcome"] for c in again.contacts} == {"unchanged"}
    assert again.ladders == [{"name": "night", "outcome": "unchanged", "version": 1}]
    current = catalog.ladder("night")
    assert current.version == 1 and current.actor == "ops" and current.created_at == T0
    assert current.definition == declared.ladders[0][0]


def test_apply_is_all_or_nothing(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML), "ops", T0)
    before = table_counts(catalog)
    good = LADDER_YAML.replace("night", "day")
    bad = LADDER_YAML.replace("[carol, bob]", "[carol, zed]")
    changed_contact = CONTACTS_YAML.replace("Alice Ng", "Alice Renamed")
    with pytest.raises(InvalidInput) as info:
        catalog.apply(declare(tmp_path, changed_contact, good, bad), "ops", T0)
    (problem,) = info.value.problems
    assert problem.file.endswith("f2.yaml") and problem.field == "legs[2].contacts[1]" and problem.line == 14
    assert table_counts(catalog) == before
    assert catalog.contact_map()["alice"].name == "Alice Ng"


def test_contacts_resolve_against_database_and_same_command(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML), "ops", T0)
    extra = "contacts:\n  - id: erin\n    name: Erin\n    phone: '+14155550105'\n"
    ladder = LADDER_YAML.replace("[carol, bob]", "[carol, erin]")
    report = catalog.apply(declare(tmp_path, extra, ladder), "ops", T0)
    assert report.ladders[0]["outcome"] == "created"


def test_apply_refuses_contact_change_that_breaks_a_stored_ladder(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    no_phone = "contacts:\n  - id: bob\n    name: Bob\n    push_tokens: [t]\n"
    with pytest.raises(InvalidInput) as info:
        catalog.apply(declare(tmp_path, no_phone), "ops", T0)
    assert all("in stored ladder 'night'" in p.message and p.line == 2 for p in info.value.problems)
    assert catalog.contact_map()["bob"].phone == "+14155550102"


def test_edit_makes_versions_with_actor_and_change(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    v2 = catalog.edit_ladder("night", lambda lad: swap_contacts(lad, "primary", "secondary"), "mgr", T0 + timedelta(hours=1), "weekly hand-over")
    assert v2 is not None and v2.version == 2 and v2.actor == "mgr" and v2.comment == "weekly hand-over"
    assert "primary contacts alice → bob" in v2.change
    assert catalog.edit_ladder("night", lambda lad: lad, "mgr", T0) is None  # nothing changed, no version
    with pytest.raises(InvalidInput) as info:
        catalog.edit_ladder("night", lambda lad: set_leg(lad, "primary", contacts=("ghost",)), "mgr", T0)
    assert "unknown contact 'ghost'" in info.value.problems[0].message
    history = catalog.history("night")
    assert [(v.version, v.actor) for v in history] == [(1, "ops"), (2, "mgr")]
    assert catalog.ladder("night", 1).definition.legs[0].contacts == ("alice",)
    assert catalog.ladder("night").definition.legs[0].contacts == ("bob",)


def test_rollback(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    original = catalog.ladder("night").definition
    catalog.edit_ladder("night", lambda lad: swap_contacts(lad, "primary", "secondary"), "mgr", T0)
    catalog.edit_ladder("night", lambda lad: set_leg(lad, "fallback", ack_timeout=30), "mgr", T0)
    v4 = catalog.rollback("night", None, "mgr", T0)  # default: the version before the latest
    assert v4.version == 4 and v4.change.startswith("rollback to v2:")
    v5 = catalog.rollback("night", 1, "mgr", T0)
    assert v5.version == 5 and v5.definition == original
    assert catalog.rollback("night", 1, "mgr", T0) is None  # already that content
    for bad in (0, 6):
        with pytest.raises(InvalidInput, match="versions 1 to 5"):
            catalog.rollback("night", bad, "mgr", T0)
    assert len(catalog.history("night")) == 5


def test_rollback_refuses_a_version_naming_a_removed_contact(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    catalog.edit_ladder("night", lambda lad: set_leg(lad, "primary", contacts=("carol",)), "mgr", T0)
    catalog.remove_contact("alice", "mgr", T0)
    with pytest.raises(InvalidInput, match="unknown contact 'alice'"):
        catalog.rollback("night", 1, "mgr", T0)


def test_delete_and_restore(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    with pytest.raises(InvalidInput, match="ESCALATOR_DEFAULT_LADDER"):
        catalog.delete_ladder("night", "ops", T0, protected=["night"])
    gone = catalog.delete_ladder("night", "ops", T0)
    assert gone.deleted and gone.version == 2
    assert catalog.ladders() == []
    with pytest.raises(InvalidInput, match="was deleted"):
        catalog.ladder("night")
    assert catalog.ladder("night", 1).definition is not None  # pinned versions stay readable
    with pytest.raises(InvalidInput, match="was deleted"):
        catalog.edit_ladder("night", lambda lad: lad, "ops", T0)
    with pytest.raises(InvalidInput, match="is a deletion"):
        catalog.rollback("night", 2, "ops", T0)
    restored = catalog.rollback("night", 1, "ops", T0)
    assert restored.version == 3 and not restored.deleted and [v.name for v in catalog.ladders()] == ["night"]
    # applying the file again after a delete continues the numbering
    catalog.delete_ladder("night", "ops", T0)
    report = catalog.apply(declare(tmp_path, LADDER_YAML), "ops", T0)
    assert report.ladders == [{"name": "night", "outcome": "created", "version": 5}]


def test_unknown_names(catalog: Catalog) -> None:
    for call in (
        lambda: catalog.ladder("nope"),
        lambda: catalog.history("nope"),
        lambda: catalog.edit_ladder("nope", lambda lad: lad, "x", T0),
        lambda: catalog.rollback("nope", None, "x", T0),
        lambda: catalog.delete_ladder("nope", "x", T0),
        lambda: catalog.remove_contact("nope", "x", T0),
        lambda: catalog.edit_contact("nope", lambda c: c, "x", T0),
    ):
        with pytest.raises(InvalidInput, match="no (ladder|contact) named 'nope'"):
            call()


def test_unknown_version(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    with pytest.raises(InvalidInput, match="has no version 9 \\(latest is 1\\)"):
        catalog.ladder("night", 9)


def test_contacts_lifecycle(catalog: Catalog, tmp_path: Path) -> None:
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    erin = Contact(id="erin", name="Erin", phone="+14155550105")
    assert catalog.add_contact(erin, "ops", T0) == 1
    with pytest.raises(InvalidInput, match="already exists"):
        catalog.add_contact(erin, "ops", T0)
    with pytest.raises(InvalidInput, match="is on ladder night"):
        catalog.remove_contact("bob", "ops", T0)
    with pytest.raises(InvalidInput, match="has no phone"):
        catalog.edit_contact("bob", lambda c: c.model_copy(update={"phone": None, "push_tokens": ("t",)}), "ops", T0)
    updated, version = catalog.edit_contact("erin", lambda c: c.model_copy(update={"name": "Erin Y"}), "ops", T0)
    assert updated.name == "Erin Y" and version == 2
    assert catalog.edit_contact("erin", lambda c: c, "ops", T0) == (updated, None)
    assert catalog.remove_contact("erin", "ops", T0) == 3
    assert "erin" not in catalog.contact_map()
    removed = [r for r in catalog.contacts(include_removed=True) if r.contact.id == "erin"]
    assert removed[0].removed
    assert catalog.add_contact(erin, "ops", T0) == 4  # re-adding a removed contact revives the id
    with catalog.engine.connect() as c:
        rows = c.execute(sa.text("SELECT version, change FROM contact_versions WHERE contact_id='erin' ORDER BY version")).all()
    assert [r[1].split(" ")[0] for r in rows] == ["created", "updated", "removed", "created"]


def test_timestamps_come_back_as_utc(catalog: Catalog, tmp_path: Path) -> None:
    local = datetime(2026, 11, 22, 5, 0, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago"))
    catalog.apply(declare(tmp_path, CONTACTS_YAML), "ops", local)
    record = catalog.contacts()[0]
    assert record.updated_at == local and record.updated_at.tzinfo is not None
    assert record.updated_at.utcoffset() == timedelta(0)


def test_catalog_revalidates_what_callers_build(catalog: Catalog, tmp_path: Path) -> None:
    """model_copy skips validation; the catalog must not store what it produced."""
    catalog.apply(declare(tmp_path, CONTACTS_YAML, LADDER_YAML), "ops", T0)
    too_many = tuple(f"t{i}" for i in range(21))
    with pytest.raises(InvalidInput, match="at most 20"):
        catalog.edit_contact("alice", lambda c: c.model_copy(update={"push_tokens": too_many}), "ops", T0)
    with pytest.raises(InvalidInput, match="cycles: must be at least 0"):
        catalog.edit_ladder("night", lambda lad: lad.model_copy(update={"cycles": -1}), "ops", T0)
    assert catalog.contact_map()["alice"].push_tokens == ("tok-alice",)
    assert catalog.ladder("night").version == 1
