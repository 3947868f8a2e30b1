"""Reading and writing ladder, contact and schedule files (SPEC §2, §10).

Reading keeps the line of every key and list item (ruamel.yaml's round-trip loader), so every
refusal can name the file, the line and the field. Writing produces the one canonical form that
`escalator ladder export` prints and `escalator apply` takes back unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from escalator.errors import InvalidInput, Problem
from escalator.ladders import Contact, Ladder, format_loc, reference_problems, validation_errors
from escalator.schedules import ScheduleDoc

YAML_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32  # mappings and lists nested in each other (a ladder file needs 5)
MAX_VALUES = 100_000  # values in a file once its aliases are expanded
MAX_ALIASES = 1_000
_OPENS = {"BlockMappingStartToken", "BlockSequenceStartToken", "FlowMappingStartToken", "FlowSequenceStartToken"}
_CLOSES = {"BlockEndToken", "FlowMappingEndToken", "FlowSequenceEndToken"}


@dataclass(frozen=True)
class Origin:
    """Where a declaration came from: its file and the parsed node, to find lines by field path."""

    file: str
    node: Any
    prefix: tuple[Any, ...] = ()

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        node, line = self.node, _line(self.node)
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        return line

    def problem(self, loc: tuple[Any, ...], message: str) -> Problem:
        return Problem(message, file=self.file, line=self.line_of(loc), field=format_loc(self.prefix + loc) or None)


def _line(node: Any) -> int | None:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None and lc.line is not None else None


@dataclass
class Declarations:
    """Everything a set of files declares, each item with its origin."""

    contacts: list[tuple[Contact, Origin]] = field(default_factory=list)
    ladders: list[tuple[Ladder, Origin]] = field(default_factory=list)
    schedules: list[tuple[ScheduleDoc, Origin]] = field(default_factory=list)

    def contact_map(self) -> dict[str, Contact]:
        return {c.id: c for c, _ in self.contacts}

    def schedule_map(self) -> dict[str, ScheduleDoc]:
        return {s.name: s for s, _ in self.schedules}


def _plain(node: Any) -> Any:
    """ruamel's annotated containers and scalars → plain Python values."""
    if isinstance(node, Mapping):
        return {str(k) if not isinstance(k, (int, float, bool)) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, folders as the *.yaml / *.yml files below them (sorted, hidden ones skipped)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in YAML_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                problems.append(Problem("folder holds no .yaml or .yml files", file=str(path)))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem("no such file or folder", file=str(path)))
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def _shape_problem(yaml: YAML, text: str, filename: str) -> Problem | None:
    """From the scanner's tokens, before anything is built (the scanner is iterative; composing a
    deep document recurses once per level and would crash first): nesting deeper than MAX_DEPTH,
    more than MAX_ALIASES aliases, and merge keys (`<<`), which the loader expands by copying
    while it builds — a few kilobytes of them took minutes. Ladder files need none of them."""
    depth = aliases = 0
    after_key = False
    for token in yaml.scan(text):
        name = type(token).__name__
        line = token.start_mark.line + 1
        if name in _OPENS:
            depth += 1
            if depth > MAX_DEPTH:
                return Problem(f"nested deeper than {MAX_DEPTH} levels", file=filename, line=line)
        elif name in _CLOSES:
            depth -= 1
        elif name == "AliasToken":
            aliases += 1
            if aliases > MAX_ALIASES:
                return Problem(f"more than {MAX_ALIASES} YAML aliases", file=filename, line=line)
        elif name == "ScalarToken" and after_key and getattr(token, "value", None) == "<<" and getattr(token, "plain", False):
            return Problem("YAML merge keys (<<) are not accepted: write the keys out", file=filename, line=line)
        after_key = name == "KeyToken"
    return None


def _expansion_problem(documents: list[Any], text: str, yaml: YAML, filename: str) -> Problem | None:
    """YAML aliases share one value among many places: a few hundred bytes can stand for billions
    of values once expanded (the "billion laughs"). Count the values as expanded, in time linear in
    the distinct ones, and refuse past MAX_VALUES, or a value that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    for document in documents:
        stack: list[tuple[Any, bool]] = [(document, False)]
        while stack:
            value, done = stack.pop()
            if not isinstance(value, (Mapping, list)):
                continue
            key = id(value)
            children = list(value.keys()) + list(value.values()) if isinstance(value, Mapping) else list(value)
            if done:
                on_path.discard(key)
                sizes[key] = 1 + sum(sizes.get(id(c), 1) for c in children)
                if sizes[key] > MAX_VALUES:
                    return Problem(f"YAML aliases expand to more than {MAX_VALUES} values", file=filename, line=_first_alias(yaml, text))
                continue
            if key in sizes:
                continue
            if key in on_path:
                return Problem("a YAML alias refers to a value that contains it", file=filename, line=_first_alias(yaml, text))
            on_path.add(key)
            stack.append((value, True))
            stack.extend((c, False) for c in children if isinstance(c, (Mapping, list)) and id(c) not in sizes)
    return None


def _first_alias(yaml: YAML, text: str) -> int | None:
    return next((t.start_mark.line + 1 for t in yaml.scan(text) if type(t).__name__ == "AliasToken"), None)


def parse_text(text: str, filename: str, into: Declarations) -> list[Problem]:
    """Parse one file's text into `into`; return its problems (nothing is added when there are any)."""
    yaml = YAML(typ="rt")
    try:
        if (problem := _shape_problem(yaml, text, filename)) is not None:
            return [problem]
        documents = list(yaml.load_all(text))
        if (problem := _expansion_problem(documents, text, yaml, filename)) is not None:
            return [problem]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        return [Problem(f"invalid YAML: {reason}", file=filename, line=mark.line + 1 if mark else None)]
    except YAMLError as exc:
        return [Problem(f"invalid YAML: {' '.join(str(exc).split())}", file=filename)]
    except RecursionError:  # belt and braces: the depth check above should have caught it
        return [Problem(f"nested deeper than {MAX_DEPTH} levels", file=filename)]

    problems: list[Problem] = []
    found = Declarations()
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        origin = Origin(filename, doc)
        if not isinstance(doc, CommentedMap):
            problems.append(
                Problem("a document must be a mapping with `contacts:`, `ladder:` or `schedule:`", file=filename, line=_line(doc))
            )
            continue
        if "ladder" in doc:
            try:
                found.ladders.append((Ladder.model_validate(_plain(doc)), origin))
            except ValidationError as exc:
                problems.extend(origin.problem(loc, msg) for loc, msg in validation_errors(exc))
        elif "schedule" in doc:
            try:
                found.schedules.append((ScheduleDoc.model_validate(_plain(doc)), origin))
            except ValidationError as exc:
                problems.extend(origin.problem(loc, msg) for loc, msg in validation_errors(exc))
        elif "contacts" in doc:
            extra = [k for k in doc if k != "contacts"]
            problems.extend(origin.problem((k,), "unknown key") for k in extra)
            items = doc["contacts"]
            if not isinstance(items, CommentedSeq):
                problems.append(origin.problem(("contacts",), "must be a list of contacts"))
                continue
            for i, item in enumerate(items):
                try:
                    found.contacts.append((Contact.model_validate(_plain(item)), Origin(filename, item, ("contacts", i))))
                except ValidationError as exc:
                    problems.extend(
                        Origin(filename, item, ("contacts", i)).problem(loc, msg) for loc, msg in validation_errors(exc)
                    )
        else:
            problems.append(
                Problem(
                    f"document {index + 1} has none of `contacts:`, `ladder:` or `schedule:`", file=filename, line=_line(doc)
                )
            )
    if not problems and not found.contacts and not found.ladders and not found.schedules:
        problems.append(Problem("file declares no contacts, no ladder and no schedule", file=filename))
    if not problems:
        into.contacts.extend(found.contacts)
        into.ladders.extend(found.ladders)
        into.schedules.extend(found.schedules)
    return problems


def load(paths: Iterable[str | Path]) -> Declarations:
    """Read and validate files on their own (no database): raises InvalidInput with every problem found."""
    files, problems = expand_paths(paths)
    declared = Declarations()
    for path in files:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                problems.append(Problem("file is larger than 1 MiB", file=str(path)))
                continue
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(Problem("file is not UTF-8 text", file=str(path)))
            continue
        except OSError as exc:
            problems.append(Problem(f"cannot read: {exc.strerror}", file=str(path)))
            continue
        problems.extend(parse_text(text, str(path), declared))
    problems.extend(_duplicate_problems(declared))
    if problems:
        raise InvalidInput(problems)
    return declared


def _duplicate_problems(declared: Declarations) -> list[Problem]:
    problems = []
    first: dict[tuple[str, str], Origin] = {}
    items: list[tuple[str, str, Origin, tuple[Any, ...]]] = [
        ("contact", c.id, o, ("id",)) for c, o in declared.contacts
    ] + [("ladder", lad.name, o, ("ladder",)) for lad, o in declared.ladders] + [
        ("schedule", sch.name, o, ("schedule",)) for sch, o in declared.schedules
    ]
    for kind, key, origin, loc in items:
        if (kind, key) in first:
            earlier = first[(kind, key)]
            problems.append(
                origin.problem(loc, f"{kind} {key!r} is declared twice (also at {earlier.file}:{earlier.line_of(loc)})")
            )
        else:
            first[(kind, key)] = origin
    return problems


def check_references(
    declared: Declarations, known: Mapping[str, Contact], known_schedules: Mapping[str, ScheduleDoc] | None = None
) -> list[Problem]:
    """Every declared ladder and schedule against the declared contacts and schedules plus those
    already known (stored)."""
    contacts = {**known, **declared.contact_map()}
    schedules = {**(known_schedules or {}), **declared.schedule_map()}
    people = {name: schedule.contact_ids() for name, schedule in schedules.items()}
    problems = [
        origin.problem(loc, msg)
        for ladder, origin in declared.ladders
        for loc, msg in reference_problems(ladder, contacts, people)
    ]
    for schedule, origin in declared.schedules:
        for i, rotation in enumerate(schedule.rotations):
            for j, contact_id in enumerate(rotation.contacts):
                if contact_id not in contacts:
                    problems.append(
                        origin.problem(("rotations", i, "contacts", j), f"unknown contact {contact_id!r} (rotation {rotation.name!r})")
                    )
    return problems


# ---------------------------------------------------------------------------------------------
# Writing.


def _flow(items: list[Any]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _ladder_node(ladder: Ladder) -> CommentedMap:
    doc = ladder.to_document()
    node = CommentedMap(doc)
    legs = CommentedSeq()
    for leg_doc in doc["legs"]:
        leg = CommentedMap(leg_doc)
        if "contacts" in leg_doc:
            leg["contacts"] = _flow(leg_doc["contacts"])
        if isinstance(leg_doc.get("schedule"), list):
            leg["schedule"] = _flow(leg_doc["schedule"])
        leg["channels"] = _flow(leg_doc["channels"])
        legs.append(leg)
    node["legs"] = legs
    return node


def _contacts_node(contacts: Iterable[Contact]) -> CommentedMap:
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    items = CommentedSeq()
    for contact in contacts:
        doc = CommentedMap(contact.to_document())
        if "phone" in doc:
            doc["phone"] = DoubleQuotedScalarString(doc["phone"])
        if "push_tokens" in doc:
            doc["push_tokens"] = _flow([DoubleQuotedScalarString(t) for t in doc["push_tokens"]])
        items.append(doc)
    return CommentedMap({"contacts": items})


def _schedule_node(schedule: ScheduleDoc) -> CommentedMap:
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    doc = schedule.to_document()
    node = CommentedMap(doc)
    rotations = CommentedSeq()
    for rotation_doc in doc["rotations"]:
        rotation = CommentedMap(rotation_doc)
        rotation["contacts"] = _flow(rotation_doc["contacts"])
        rotation["start"] = DoubleQuotedScalarString(rotation_doc["start"])
        if "active" in rotation_doc:
            windows = CommentedSeq()
            for window_doc in rotation_doc["active"]:
                window = CommentedMap(
                    days=_flow(window_doc["days"]),
                    **{"from": DoubleQuotedScalarString(window_doc["from"]), "to": DoubleQuotedScalarString(window_doc["to"])},
                )
                window.fa.set_flow_style()
                windows.append(window)
            rotation["active"] = windows
        rotations.append(rotation)
    node["rotations"] = rotations
    return node


def dump(contacts: Iterable[Contact] = (), ladders: Iterable[Ladder] = (), schedules: Iterable[ScheduleDoc] = ()) -> str:
    """The canonical YAML: a contacts document (if any), one document per schedule, then one per ladder."""
    nodes: list[CommentedMap] = []
    contacts = list(contacts)
    if contacts:
        nodes.append(_contacts_node(contacts))
    nodes.extend(_schedule_node(schedule) for schedule in schedules)
    nodes.extend(_ladder_node(ladder) for ladder in ladders)
    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump_all(nodes, out)
    return out.getvalue()
