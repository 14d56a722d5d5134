"""FHIR JSON files, streamed: `.json` (one resource or a Bundle) and `.ndjson` (one resource a
line, FHIR Bulk Data style) in; NDJSON or a searchset Bundle out. A large NDJSON file never
sits in memory whole: it is read a line at a time and imported in chunks."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from store.fhir import Study

SUFFIXES = (".json", ".ndjson")


@dataclass
class Item:
    """One thing read from a file: a resource (or Bundle) to import, or why there is none."""

    path: str
    line: int | None = None  # the NDJSON line; None for a whole JSON document
    payload: Any = None
    error: str | None = None

    @property
    def source(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"


def walk(paths: Iterable[str | Path], suffixes: tuple[str, ...] = SUFFIXES) -> Iterator[Path]:
    """The files under `paths` (recursively for folders) with one of `suffixes`, in order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
            )
        else:
            yield path


def read(path: Path) -> Iterator[Item]:
    """Items of one file: each NDJSON line, or the one JSON document."""
    try:
        if path.suffix.lower() == ".ndjson":
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        yield _parse(line, str(path), number)
        else:
            yield _parse(path.read_text(encoding="utf-8"), str(path), None)
    except (OSError, UnicodeDecodeError) as error:
        yield Item(str(path), error=f"cannot read the file: {error}")


def _parse(text: str, path: str, line: int | None) -> Item:
    try:
        return Item(path, line, json.loads(text))
    except json.JSONDecodeError as error:
        # An NDJSON line is parsed alone: its "line 1" is the file's line `line`.
        where = (
            f"column {error.colno}"
            if line is not None
            else f"line {error.lineno} column {error.colno}"
        )
        return Item(path, line, error=f"not JSON: {error.msg} at {where}")


def dumps(resource: Any) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


async def write_ndjson(studies: AsyncIterator[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    async for study in studies:
        out.write(dumps(study) + "\n")
        count += 1
    return count


async def write_bundle(
    studies: AsyncIterator[dict[str, Any]], out: IO[str], total: int | None = None
) -> int:
    """A searchset Bundle, written entry by entry so no page of studies is held twice."""
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    out.write(dumps(head)[:-1] + ',"entry":[')
    count = 0
    async for study in studies:
        entry = {
            "fullUrl": f"urn:uuid:{_uuid(study['id'])}",
            "resource": study,
            "search": {"mode": "match"},
        }
        out.write(("," if count else "") + "\n" + dumps(entry))
        count += 1
    out.write("\n]}\n")
    return count


def _uuid(study_id: str) -> str:
    # A stable fullUrl per study id: R5 Bundles want one, and we know no public base URL.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ImagingStudy/{study_id}"))


def canonical(study: Study) -> Study:
    """A stored study as FHIR R5 JSON: resourceType, id and meta first, then as stored."""
    head: Study = {k: study[k] for k in ("resourceType", "id", "meta") if k in study}
    return {**head, **{k: v for k, v in study.items() if k not in head}}
