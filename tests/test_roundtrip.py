"""export → apply → export is identical for any valid ladder (hypothesis), through the real database."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalator import clock, ladder_files
from escalator.ladders import Contact, Ladder
from escalator.store.catalog import Catalog

IDS = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True)
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60
).map(str.strip).filter(bool)
ZONES = st.sampled_from(["UTC", "America/Chicago", "Europe/Oslo", "Asia/Kolkata", "Pacific/Chatham"])
CHANNEL_SETS = st.permutations(["voice", "sms", "push"]).flatmap(lambda p: st.integers(1, 3).map(lambda n: p[:n]))
PEOPLE = [f"p{i}" for i in range(8)]


@st.composite
def ladders(draw) -> Ladder:
    leg_names = draw(st.lists(IDS, min_size=1, max_size=6, unique=True))
    legs = []
    for name in leg_names:
        leg = {
            "name": name,
            "contacts": draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=4, unique=True)),
            "channels": list(draw(CHANNEL_SETS)),
        }
        if draw(st.booleans()):
            leg["ack_timeout"] = draw(st.integers(5, 3600))
        legs.append(leg)
    return Ladder.model_validate(
        {
            "ladder": draw(IDS),
            "description": draw(st.one_of(st.just(""), TEXT, st.sampled_from(["yes", "null", "~", "#x", "a: b", "0x1F", "- y", "'q'", '"dq"']))),
            "timezone": draw(ZONES),
            "ack_timeout": draw(st.integers(5, 3600)),
            "cycles": draw(st.integers(0, 1000)),
            "legs": legs,
        }
    )


def contacts() -> list[Contact]:
    return [Contact(id=p, name=f"Person {p}: «{p}»", phone=f"+1415555{i:04d}", push_tokens=(f"tok/{p}==",)) for i, p in enumerate(PEOPLE)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ladder=ladders())
def test_export_apply_export_is_identical(catalog: Catalog, ladder: Ladder) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        first = ladder_files.dump(contacts(), [ladder])
        path = Path(tmp) / "in.yaml"
        path.write_text(first, encoding="utf-8")
        declared = ladder_files.load([path])
        assert [lad for lad, _ in declared.ladders] == [ladder]
        catalog.apply(declared, "prop", clock.now())
        stored = catalog.ladder(ladder.name).definition
        wanted = [r.contact for r in catalog.contacts() if r.contact.id in stored.contact_ids() | set(PEOPLE)]
        second = ladder_files.dump(wanted, [stored])
        assert second == first
        report = catalog.apply(ladder_files.load([path]), "prop", clock.now())
        assert report.ladders[0]["outcome"] == "unchanged"
