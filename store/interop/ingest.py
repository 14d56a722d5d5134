"""DICOM files into studies: read headers, group them by study and series, and upsert each
study through a Writer in batches (never one write per file).

A study whose Study Instance UID is already stored gets the new series and instances added, and
the endpoint references the headers carry that it or its series lack (the DICOMweb sync's
WADO-RS base), only ever appended; a SOP instance already present is a duplicate (the same image
in several transfer syntaxes is one instance). Creation is a conditional create on the Study
UID, so concurrent ingests of one study from two processes never make two studies. A new study's
id is its Study Instance UID when that is a valid FHIR id no other study has (`stable_id`), so
the same files give the same ids on every machine and at every start. The Writer is the
repository itself, or a running server's GraphQL API: the same algorithm either way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from store.fhir import Study, endpoints
from store.fhir.edit import INSTANCE_KEY, SERIES_KEY
from store.fhir.identity import same_subject, study_uid
from store.fhir.outcome import BAD_USER_INPUT, StoreError, fail
from store.fhir.primitives import CHECKS
from store.fhir.validate import part_issues, structure_issues
from store.interop import dicom
from store.interop.bundle import study_uid_condition

BATCH = 10_000  # instances per write, the AddInstances limit
FLUSH_AT = 5_000  # pending instances that trigger writing what has been read so far
ID_ELEMENT = "ImagingStudy.id"


def stable_id(study_uid: str) -> str | None:
    """The id a study made from DICOM asks for: its Study Instance UID when that is a FHIR id
    (R5: 1 to 64 of A-Z a-z 0-9 - .; every valid DICOM UID is one), else None (a random id)."""
    return study_uid if CHECKS["id"](study_uid) is None else None


def id_taken(error: StoreError) -> bool:
    """Whether a create was refused because its id is already another study's, the one
    refusal a create with a chosen id has that a create without one has not."""
    return error.code == BAD_USER_INPUT and [i.expression for i in error.issues] == [ID_ELEMENT]


class Writer(Protocol):
    async def create(
        self, resource: Study, if_none_exist: str | None = None
    ) -> tuple[Study, bool]: ...
    async def add_series(
        self, study_id: str, series: list[dict[str, Any]], version_id: str | None
    ) -> Study: ...
    async def add_instances(
        self,
        study_id: str,
        series_uid: str,
        instances: list[dict[str, Any]],
        version_id: str | None,
    ) -> Study: ...
    async def add_endpoints(
        self,
        study_id: str,
        study: list[dict[str, Any]],
        series: dict[str, list[dict[str, Any]]],
        version_id: str | None,
    ) -> Study: ...


@dataclass
class IngestReport:
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    studies_created: int = 0
    studies_updated: int = 0
    instances_added: int = 0
    instances_duplicate: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (Study UID, why)
    # (Study UID, id) of the studies created with a random id: their UID is not a FHIR id, or
    # another study has it as its id.
    random_ids: list[tuple[str, str]] = field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"files read          {self.files:>8}",
            f"files skipped       {sum(self.skipped.values()):>8}",
        ]
        lines += [f"  {reason}: {count}" for reason, count in self.skipped.most_common()]
        lines += [
            f"studies created     {self.studies_created:>8}",
            *(
                f"  study {uid} created as ImagingStudy/{study_id}: its Study UID is not "
                "a free FHIR id"
                for uid, study_id in self.random_ids
            ),
            f"studies updated     {self.studies_updated:>8}",
            f"instances added     {self.instances_added:>8}",
            f"instances duplicate {self.instances_duplicate:>8}",
        ]
        lines += [f"  study {uid} not written: {why}" for uid, why in self.failed]
        return "\n".join(lines)


@dataclass
class _Pending:
    study: Study
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> series
    instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # series uid ->
    seen: dict[str, str] = field(default_factory=dict)  # SOP uid -> series uid


class Ingest:
    def __init__(
        self,
        writer: Writer,
        *,
        timezone: str | None = None,
        endpoint: str | None = None,
        batch: int = BATCH,
        flush_at: int = FLUSH_AT,
        on_skip: Callable[[Path, str], None] | None = None,
    ) -> None:
        """`on_skip(path, reason)` hears of each skipped file as it is skipped (the report
        only counts them by reason: a listing of millions of files is the caller's choice)."""
        self.writer = writer
        self.on_skip = on_skip
        self.timezone = timezone
        self.endpoint = endpoint
        self.batch = batch
        self.flush_at = flush_at
        self.report = IngestReport()
        self._pending: dict[str, _Pending] = {}
        self._count = 0

    async def run(self, paths: Iterable[str | Path], progress: Any = None) -> IngestReport:
        for path in _files(paths):
            self.report.files += 1
            try:
                self._add(dicom.read(path, timezone=self.timezone, endpoint=self.endpoint))
            except dicom.Skip as skip:
                self.report.skipped[str(skip)] += 1
                if self.on_skip is not None:
                    self.on_skip(path, str(skip))
            if progress is not None:
                progress.step(1, path.name)
            if self._count >= self.flush_at:
                await self._flush()
        await self._flush()
        return self.report

    def add(self, header: dicom.Header) -> None:
        """Queue one instance read elsewhere than a file (the DICOMweb sync reads it from the
        network); raises dicom.Skip as a file's header would. flush() writes the queue."""
        self._add(header)

    async def flush(self) -> None:
        """Write what add() queued, in the same batches as files (failures to the report)."""
        await self._flush()

    def _add(self, header: dicom.Header) -> None:
        pending = self._pending.get(header.study_uid)
        if pending is None:
            issues = structure_issues(header.study)
            if issues:
                raise dicom.Skip(f"invalid {issues[0].expression}: {issues[0].diagnostics}")
            pending = self._pending[header.study_uid] = _Pending(header.study)
        sop_uid = header.instance["uid"]
        if sop_uid in pending.seen:
            if pending.seen[sop_uid] != header.series_uid:
                raise dicom.Skip("SOP Instance UID already in another series of the study")
            self.report.instances_duplicate += 1
            return
        if header.series_uid not in pending.series:
            issues = part_issues(header.study, SERIES_KEY, header.series, "ImagingStudy.series")
            if issues:
                raise dicom.Skip(f"invalid {issues[0].expression}: {issues[0].diagnostics}")
        issues = part_issues(
            header.study, INSTANCE_KEY, header.instance, "ImagingStudy.series.instance"
        )
        if issues:
            raise dicom.Skip(f"invalid {issues[0].expression}: {issues[0].diagnostics}")
        pending.series.setdefault(header.series_uid, header.series)
        pending.instances.setdefault(header.series_uid, []).append(header.instance)
        pending.seen[sop_uid] = header.series_uid
        self._count += 1

    async def _flush(self) -> None:
        for uid, pending in self._pending.items():
            try:
                await self._write(pending)
            except StoreError as error:
                self.report.failed.append((uid, error.message))
        self._pending.clear()
        self._count = 0

    async def _write(self, pending: _Pending) -> None:
        budget = self.batch
        first: list[dict[str, Any]] = []
        for uid, series in pending.series.items():
            instances = pending.instances[uid][:budget]
            budget -= len(instances)
            first.append({**series, "instance": instances} if instances else series)
        stored, created = await self.create_study({**pending.study, "series": first})
        if not created and not same_subject(stored, pending.study):
            raise fail(
                BAD_USER_INPUT,
                "ImagingStudy.subject",
                f"the stored study with this "
                f"Study Instance UID (ImagingStudy/{stored['id']}) is about another "
                "patient; nothing was added (studies are never merged across subjects)",
            )
        linked = False
        if not created:
            stored, linked = await self._link(stored, pending)
        present = {
            s["uid"]: {i["uid"] for i in s.get("instance") or ()}
            for s in stored.get("series") or ()
        }
        new_series = [
            {k: v for k, v in s.items()} for uid, s in pending.series.items() if uid not in present
        ]
        if new_series:
            stored = await self.writer.add_series(stored["id"], new_series, None)
            present.update({s["uid"]: set() for s in new_series})
        added = 0
        for uid, instances in pending.instances.items():
            missing = [i for i in instances if i["uid"] not in present[uid]]
            if created:
                added += len(instances) - len(missing)
            else:
                self.report.instances_duplicate += len(instances) - len(missing)
            for start in range(0, len(missing), self.batch):
                chunk = missing[start : start + self.batch]
                await self.writer.add_instances(stored["id"], uid, chunk, None)
                added += len(chunk)
        self.report.instances_added += added
        if created:
            self.report.studies_created += 1
        elif added or new_series or linked:
            self.report.studies_updated += 1

    async def _link(self, stored: Study, pending: _Pending) -> tuple[Study, bool]:
        """Gives a stored study, and its stored series, the endpoint references the batch
        carries and they lack (a study indexed from files, then synced from a PACS), by one
        write; whether it was needed. Only ever adds: files, which carry none, remove none."""
        study, series = endpoints.lacking(
            stored,
            pending.study.get("endpoint") or [],
            {uid: s.get("endpoint") or [] for uid, s in pending.series.items()},
        )
        if not study and not series:
            return stored, False
        return await self.writer.add_endpoints(stored["id"], study, series, None), True

    async def create_study(self, study: Study) -> tuple[Study, bool]:
        """Creates `study` (new from DICOM: no id) unless its Study UID is stored; returns the
        stored study and whether it was created. Every route in (files, the DICOMweb sync)
        creates through here, so all give the same ids.

        A conditional create on the Study UID, asking for the UID as the id. The condition
        decides between concurrent ingests of one study (they all ask for the same id, and one
        claim on the UID lets one of them create); the id only decides what the study is
        called. An id another study already has (a study written with that id by hand, say)
        is left to it and the server picks a random one."""
        condition = study_uid_condition(study)
        uid = study_uid(study)
        chosen = None if uid is None else stable_id(uid)
        if chosen is not None:
            try:
                return await self.writer.create({**study, "id": chosen}, condition)
            except StoreError as error:
                if not id_taken(error):
                    raise
        stored, created = await self.writer.create(study, condition)
        if created and uid is not None:
            self.report.random_ids.append((uid, str(stored["id"])))
        return stored, created


def _files(paths: Iterable[str | Path]) -> Iterable[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path
