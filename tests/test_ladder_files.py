"""Every rule of SPEC §2 is refused with the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalator import ladder_files
from escalator.errors import InvalidInput
from escalator.ladders import Contact, Ladder
from tests.conftest import CONTACTS_YAML, LADDER_YAML, write

GOOD_LEG = "  - name: primary\n    contacts: [alice]\n"


def refusals(tmp_path: Path, text: str, name: str = "f.yaml") -> list:
    path = write(tmp_path / name, text)
    with pytest.raises(InvalidInput) as info:
        ladder_files.load([path])
    return info.value.problems


# (file text, line, field, words the message must contain)
CASES = {
    "bad ladder id": ("ladder: Night Shift\nlegs:\n" + GOOD_LEG, 1, "ladder", "not a valid id"),
    "window too short": ("ladder: a\nack_timeout: 4s\nlegs:\n" + GOOD_LEG, 2, "ack_timeout", "between 5s and 1h"),
    "window too long": ("ladder: a\nack_timeout: 61m\nlegs:\n" + GOOD_LEG, 2, "ack_timeout", "between 5s and 1h"),
    "window gibberish": ("ladder: a\nack_timeout: soon\nlegs:\n" + GOOD_LEG, 2, "ack_timeout", "not a duration"),
    "window negative": ("ladder: a\nack_timeout: -30\nlegs:\n" + GOOD_LEG, 2, "ack_timeout", "between 5s and 1h"),
    "leg window": (
        "ladder: a\nlegs:\n  - name: p\n    contacts: [alice]\n    ack_timeout: 2h\n", 5, "legs[0].ack_timeout", "between"
    ),
    "ack expiry too short": ("ladder: a\nack_expires: 4m\nlegs:\n" + GOOD_LEG, 2, "ack_expires", "between 5m and 24h"),
    "ack expiry too long": ("ladder: a\nack_expires: 25h\nlegs:\n" + GOOD_LEG, 2, "ack_expires", "between 5m and 24h"),
    "ack expiry gibberish": ("ladder: a\nack_expires: later\nlegs:\n" + GOOD_LEG, 2, "ack_expires", "not a duration"),
    "connect_caller as text": ("ladder: a\nconnect_caller: 'no'\nlegs:\n" + GOOD_LEG, 2, "connect_caller", "true or false"),
    "bad timezone": ("ladder: a\ntimezone: Mars/Olympus\nlegs:\n" + GOOD_LEG, 2, "timezone", "IANA"),
    "negative cycles": ("ladder: a\ncycles: -1\nlegs:\n" + GOOD_LEG, 2, "cycles", "at least 0"),
    "cycles as text": ("ladder: a\ncycles: two\nlegs:\n" + GOOD_LEG, 2, "cycles", "whole number"),
    "no legs": ("ladder: a\nlegs: []\n", 2, "legs", "must not be empty"),
    "legs missing": ("ladder: a\ndescription: x\n", 1, "legs", "is required"),
    "empty leg": ("ladder: a\nlegs:\n  - name: p\n    contacts: []\n", 4, "legs[0].contacts", "must not be empty"),
    "leg without contacts": ("ladder: a\nlegs:\n  - name: p\n", 3, "legs[0].contacts", "is required"),
    "duplicate leg names": (  # the second leg's own line and field, not the `legs:` line
        "ladder: a\nlegs:\n" + GOOD_LEG + GOOD_LEG, 5, "legs[1].name", "leg name 'primary' is listed twice"
    ),
    "bad leg name": ("ladder: a\nlegs:\n  - name: Primary Leg\n    contacts: [alice]\n", 3, "legs[0].name", "not a valid id"),
    "unknown channel": (
        "ladder: a\nlegs:\n  - name: p\n    contacts: [alice]\n    channels: [voice, fax]\n", 5, "legs[0].channels[1]",
        "'fax' is not one of",
    ),
    "no channels": ("ladder: a\nlegs:\n  - name: p\n    contacts: [alice]\n    channels: []\n", 5, "legs[0].channels", "empty"),
    "repeated channel": (
        "ladder: a\nlegs:\n  - name: p\n    contacts: [alice]\n    channels: [sms, sms]\n", 5, "legs[0].channels[1]", "twice"
    ),
    "repeated contact in leg": (
        "ladder: a\nlegs:\n  - name: p\n    contacts: [alice, alice]\n", 4, "legs[0].contacts[1]", "twice"
    ),
    "repeated contact on its own line": (
        "ladder: a\nlegs:\n  - name: p\n    contacts:\n      - alice\n      - bob\n      - alice\n", 7, "legs[0].contacts[2]", "twice"
    ),
    "repeated push token": (
        "contacts:\n  - id: a\n    name: A\n    push_tokens:\n      - t1\n      - t1\n", 6, "contacts[0].push_tokens[1]", "twice"
    ),
    "unknown ladder key": ("ladder: a\nescalate_to: ceo\nlegs:\n" + GOOD_LEG, 2, "escalate_to", "unknown key"),
    "unknown leg key": (
        "ladder: a\nlegs:\n  - name: p\n    contacts: [alice]\n    chanels: [sms]\n", 5, "legs[0].chanels", "unknown key"
    ),
    "bad contact id": ("contacts:\n  - id: Alice\n    name: A\n    phone: '+14155550101'\n", 2, "contacts[0].id", "not a valid id"),
    "bad phone": ("contacts:\n  - id: a\n    name: A\n    phone: '555-0101'\n", 4, "contacts[0].phone", "E.164"),
    "unquoted phone": ("contacts:\n  - id: a\n    name: A\n    phone: +14155550101\n", 4, "contacts[0].phone", "quoted string"),
    "phone too long": (
        "contacts:\n  - id: a\n    name: A\n    phone: '+1415555010199999'\n", 4, "contacts[0].phone", "E.164"
    ),
    "contact unreachable": ("contacts:\n  - id: a\n    name: A\n", 2, "contacts[0]", "needs a phone, push_tokens"),
    "contact without name": ("contacts:\n  - id: a\n    phone: '+14155550101'\n", 2, "contacts[0].name", "is required"),
    "unknown contact key": (
        "contacts:\n  - id: a\n    name: A\n    phone: '+14155550101'\n    email: a@b.c\n", 5, "contacts[0].email", "unknown key"
    ),
    "contacts not a list": ("contacts: alice\n", 1, "contacts", "must be a list"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_is_refused_with_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, line, field, words = CASES[case]
    problems = refusals(tmp_path, text)
    matching = [p for p in problems if p.field == field]
    assert matching, f"no problem on field {field!r}: {[str(p) for p in problems]}"
    problem = matching[0]
    assert problem.file == str(tmp_path / "f.yaml")
    assert problem.line == line, str(problem)
    assert words in problem.message, str(problem)
    assert str(problem).startswith(f"{tmp_path / 'f.yaml'}:{line}: {field}: ")


def test_unknown_contact_is_located_on_its_list_item(tmp_path: Path) -> None:
    declared = ladder_files.load([write(tmp_path / "l.yaml", LADDER_YAML.replace("[carol, bob]", "[carol,\n        zed]"))])
    contacts = ladder_files.load([write(tmp_path / "c.yaml", CONTACTS_YAML)]).contact_map()
    problems = ladder_files.check_references(declared, contacts)
    assert [(p.line, p.field) for p in problems] == [(15, "legs[2].contacts[1]")]
    assert "unknown contact 'zed'" in problems[0].message


def test_contact_without_phone_refused_on_voice_leg(tmp_path: Path) -> None:
    declared = ladder_files.load([write(tmp_path / "l.yaml", "ladder: a\nlegs:\n  - name: p\n    contacts: [dave]\n")])
    contacts = ladder_files.load([write(tmp_path / "c.yaml", CONTACTS_YAML)]).contact_map()
    (problem,) = ladder_files.check_references(declared, contacts)
    assert (problem.line, problem.field) == (4, "legs[0].contacts[0]")
    assert "has no phone" in problem.message and "sms, voice" in problem.message


def test_push_only_leg_needs_push_tokens(tmp_path: Path) -> None:
    text = "ladder: a\nlegs:\n  - name: p\n    contacts: [bob]\n    channels: [push]\n"
    declared = ladder_files.load([write(tmp_path / "l.yaml", text)])
    contacts = ladder_files.load([write(tmp_path / "c.yaml", CONTACTS_YAML)]).contact_map()
    (problem,) = ladder_files.check_references(declared, contacts)
    assert "no push_tokens" in problem.message
    # the same contact on a push-only leg is fine once they have a token; dave has one and no phone
    ok = ladder_files.load([write(tmp_path / "l.yaml", text.replace("[bob]", "[dave]"))])
    assert ladder_files.check_references(ok, contacts) == []


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    (problem,) = refusals(tmp_path, "ladder: a\nlegs:\n  - name: [p\n")
    assert problem.line is not None and problem.line >= 3
    assert problem.message.startswith("invalid YAML")


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    (problem,) = refusals(tmp_path, "ladder: a\nladder: b\nlegs:\n" + GOOD_LEG)
    assert problem.line == 2 and "duplicate key" in problem.message


def test_document_of_neither_kind(tmp_path: Path) -> None:
    (problem,) = refusals(tmp_path, "---\nname: x\n---\n- a\n- b\n")[:1]
    assert "none of `contacts:`, `ladder:` or `schedule:`" in problem.message


def test_scalar_document(tmp_path: Path) -> None:
    problems = refusals(tmp_path, "just words\n")
    assert "must be a mapping" in problems[0].message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (problem,) = refusals(tmp_path, "# nothing here\n")
    assert problem.message == "file declares no contacts, no ladder and no schedule"


def test_not_utf8_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"ladder: \xff\xfe\n")
    with pytest.raises(InvalidInput) as info:
        ladder_files.load([tmp_path / "bin.yaml", tmp_path / "missing.yaml"])
    messages = sorted(str(p) for p in info.value.problems)
    assert any("not UTF-8" in m for m in messages)
    assert any("missing.yaml: no such file or folder" in m for m in messages)


def test_several_documents_and_kinds_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path / "all.yaml", CONTACTS_YAML + "---\n" + LADDER_YAML + "---\n" + LADDER_YAML.replace("night", "day"))
    declared = ladder_files.load([path])
    assert [c.id for c, _ in declared.contacts] == ["alice", "bob", "carol", "dave"]
    assert [lad.name for lad, _ in declared.ladders] == ["night", "day"]
    night = declared.ladders[0][0]
    assert night.window(0) == 120 and night.window(1) == 90
    assert night.legs[1].channels == ("voice", "sms", "push")  # the default: all three
    # errors in a later document carry that document's own line numbers within the file
    bad = write(tmp_path / "bad.yaml", CONTACTS_YAML + "---\n" + LADDER_YAML.replace("90s", "9000s"))
    with pytest.raises(InvalidInput) as info:
        ladder_files.load([bad])
    (problem,) = info.value.problems
    assert problem.line == CONTACTS_YAML.count("\n") + 1 + LADDER_YAML.splitlines().index("    ack_timeout: 90s") + 1


def test_duplicates_across_files_name_both_places(tmp_path: Path) -> None:
    write(tmp_path / "d/a.yaml", LADDER_YAML)
    write(tmp_path / "d/b.yaml", LADDER_YAML)
    with pytest.raises(InvalidInput) as info:
        ladder_files.load([tmp_path / "d"])
    (problem,) = info.value.problems
    assert "ladder 'night' is declared twice" in problem.message
    assert f"{tmp_path / 'd/a.yaml'}:1" in problem.message and problem.file == str(tmp_path / "d/b.yaml")


def test_folder_reads_yaml_files_only_sorted_and_skips_hidden(tmp_path: Path) -> None:
    write(tmp_path / "d/2-ladder.yml", LADDER_YAML)
    write(tmp_path / "d/1-contacts.yaml", CONTACTS_YAML)
    write(tmp_path / "d/README.md", "not yaml")
    write(tmp_path / "d/.hidden/x.yaml", "broken: [")
    files, problems = ladder_files.expand_paths([tmp_path / "d"])
    assert [f.name for f in files] == ["1-contacts.yaml", "2-ladder.yml"] and problems == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no .yaml" in ladder_files.expand_paths([empty])[1][0].message


def test_every_problem_in_every_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path / "d/a.yaml", "ladder: a\nack_timeout: 1s\nlegs:\n" + GOOD_LEG)
    write(tmp_path / "d/b.yaml", "contacts:\n  - id: B\n    name: x\n    phone: '+14155550101'\n")
    with pytest.raises(InvalidInput) as info:
        ladder_files.load([tmp_path / "d"])
    assert {(Path(p.file).name, p.line) for p in info.value.problems} == {("a.yaml", 2), ("b.yaml", 2)}


def test_dump_is_canonical_and_loads_back(tmp_path: Path) -> None:
    declared = ladder_files.load([write(tmp_path / "c.yaml", CONTACTS_YAML), write(tmp_path / "l.yaml", LADDER_YAML)])
    contacts = [c for c, _ in declared.contacts]
    ladders = [lad for lad, _ in declared.ladders]
    text = ladder_files.dump(contacts, ladders)
    again = ladder_files.load([write(tmp_path / "out.yaml", text)])
    assert [c for c, _ in again.contacts] == contacts and [lad for lad, _ in again.ladders] == ladders
    assert ladder_files.dump([c for c, _ in again.contacts], [lad for lad, _ in again.ladders]) == text
    assert 'phone: "+14155550101"' in text and "contacts: [carol, bob]" in text


def test_reference_ladder_is_the_brief(tmp_path: Path) -> None:
    from tests.conftest import REPO

    declared = ladder_files.load([REPO / "ladders"])
    assert ladder_files.check_references(declared, {}) == []
    (ladder,) = [lad for lad, _ in declared.ladders]
    assert isinstance(ladder, Ladder) and ladder.name == "after-hours" and ladder.cycles == 0
    people = [c for leg in ladder.legs for c in leg.contacts]
    assert len(people) == len(set(people)) == 7
    assert [leg.name for leg in ladder.legs][:2] == ["primary", "secondary"]
    assert all(ladder.window(i) == 120 and leg.channels == ("voice", "sms", "push") for i, leg in enumerate(ladder.legs))
    assert all(isinstance(c, Contact) and c.phone and c.phone.startswith("+1415555") for c, _ in declared.contacts)


def test_a_yaml_alias_bomb_is_refused_quickly_with_its_line(tmp_path: Path) -> None:
    import time

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lines) + "\nladder: x\nlegs:\n" + GOOD_LEG  # 9^9 = 387 million values once expanded
    started = time.monotonic()
    [problem] = refusals(tmp_path, text)
    assert time.monotonic() - started < 5
    assert (problem.line, "YAML aliases expand to more than 100000 values") == (2, problem.message)


def test_nesting_deeper_than_32_is_refused_with_its_line(tmp_path: Path) -> None:
    [problem] = refusals(tmp_path, "ladder: x\nlegs:\n" + GOOD_LEG + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problem.line == 5 and "nested deeper than 32 levels" in problem.message
    block = "ladder: x\nlegs:\n" + GOOD_LEG + "d:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)) + "  " * 40 + "v: 1\n"
    [problem] = refusals(tmp_path, block, "block.yaml")
    assert "nested deeper than 32 levels" in problem.message and problem.line is not None


def test_shared_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    text = CONTACTS_YAML + "---\nladder: shared\nlegs:\n  - name: a\n    contacts: &who [alice]\n  - name: b\n    contacts: *who\n"
    declared = ladder_files.load([write(tmp_path / "ok.yaml", text)])
    assert [leg.contacts for leg in declared.ladders[0][0].legs] == [("alice",), ("alice",)]


def test_yaml_merge_keys_and_alias_floods_are_refused_before_loading(tmp_path: Path) -> None:
    import time

    merges = "a: &a {" + ", ".join(f"k{i}: {i}" for i in range(1000)) + "}\n" + "".join(f"m{i}: {{<<: *a}}\n" for i in range(1000))
    started = time.monotonic()
    [problem] = refusals(tmp_path, merges + "ladder: x\nlegs:\n" + GOOD_LEG)  # took 155 s to load
    assert time.monotonic() - started < 5 and problem.line == 2 and "merge keys" in problem.message
    flood = "a: &a x\nb: [" + ", ".join(["*a"] * 1001) + "]\nladder: x\nlegs:\n" + GOOD_LEG
    [problem] = refusals(tmp_path, flood, "flood.yaml")
    assert problem.line == 2 and "more than 1000 YAML aliases" in problem.message
    quoted = CONTACTS_YAML.replace("name: Alice Ng", "name: '<<'")  # a quoted "<<" is just text
    assert ladder_files.load([write(tmp_path / "q.yaml", quoted)]).contacts[0][0].name == "<<"
