"""Write fields. Each is one atomic compare-and-set in the store; `versionId`, when given, must
equal the stored meta.versionId. Inputs become FHIR JSON before the rules see them."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from api.auth import guard
from api.context import Info
from api.inputs import (
    ImagingStudyInput,
    ImagingStudySeriesInput,
    ImagingStudySeriesInstanceInput,
    to_fhir,
)
from api.types.imaging_study import ImagingStudy
from store.bundle import Importer
from store.fhir.outcome import BAD_USER_INPUT, fail
from store.repository import Guard

MAX_BATCH = 10_000
Version = Annotated[str | None, strawberry.argument(
    description="Optimistic concurrency: when given, the write applies only if the stored "
    "meta.versionId equals it (else VERSION_CONFLICT). When omitted, the write applies "
    "atomically to the latest version.")]


@strawberry.type(description="The outcome of a delete.")
class ImagingStudyDeleteResult:
    id: strawberry.ID = strawberry.field(description="The deleted study's id.")
    deleted: bool = strawberry.field(description="Always true: the study left reads and "
                                     "lists; its history stays.")


def _guard(info: Info, letters: str, operation: str) -> Guard:
    """Checks the scopes; for a patient-confined caller, the precondition on each study."""
    return guard(info.context.allow(letters, operation), operation)


def _check(guard: Guard, resource: dict[str, Any]) -> None:
    if guard is not None:
        guard(resource)


def _recording(info: Info, guard: Guard) -> Guard:
    """The guard, also noting each study it is shown for the audit record."""
    def check(study: dict[str, Any]) -> None:
        if "id" in study:
            info.context.touch(study)
        _check(guard, study)
    return check


def _touched(info: Info, study: dict[str, Any]) -> dict[str, Any]:
    info.context.touch(study)
    return study


def _batch(items: list[Any], name: str) -> list[Any]:
    if len(items) > MAX_BATCH:
        raise fail(BAD_USER_INPUT, name, f"at most {MAX_BATCH} {name} per call "
                   f"(got {len(items)})")
    return to_fhir(items)


@strawberry.type
class Mutation:
    @strawberry.mutation(name="ImagingStudyCreate", description="Creates a study. The server "
                         "assigns `id` when absent. With `ifNoneExist` (a FHIR search string such"
                         " as identifier=urn:dicom:uid|urn:oid:1.2.3) an existing match is "
                         "returned unchanged instead; several matches are an error.")
    async def create(self, info: Info, res: ImagingStudyInput,
                     ifNoneExist: str | None = None) -> ImagingStudy:
        resource = to_fhir(res)
        _check(_guard(info, "c", "ImagingStudyCreate"), resource)
        study, _ = await info.context.repo.create(resource, ifNoneExist)
        info.context.touch(study)
        return study

    @strawberry.mutation(name="ImagingStudyUpdate", description="Replaces a study whole, under "
                         "the status lifecycle.")
    async def update(self, info: Info, id: strawberry.ID, res: ImagingStudyInput,
                     versionId: Version = None) -> ImagingStudy:
        resource = to_fhir(res)
        guard = _guard(info, "u", "ImagingStudyUpdate")
        _check(guard, resource)
        return _touched(info, await info.context.repo.update(id, resource, versionId, guard))

    @strawberry.mutation(name="ImagingStudyDelete", description="Deletes a study: it leaves "
                         "reads and lists; its history stays.")
    async def delete(self, info: Info, id: strawberry.ID,
                     versionId: Version = None) -> ImagingStudyDeleteResult:
        guard = _guard(info, "d", "ImagingStudyDelete")
        await info.context.repo.delete(id, versionId, _recording(info, guard))
        return ImagingStudyDeleteResult(id=id, deleted=True)

    @strawberry.mutation(name="ImagingStudySetStatus", description="Moves a study through its "
                         "lifecycle (registered, available, cancelled, entered-in-error, "
                         "unknown). Setting the current status changes nothing.")
    async def set_status(self, info: Info, id: strawberry.ID, status: str,
                         versionId: Version = None) -> ImagingStudy:
        guard = _guard(info, "u", "ImagingStudySetStatus")
        return _touched(info, await info.context.repo.set_status(id, status, versionId, guard))

    @strawberry.mutation(name="ImagingStudyAddSeries", description="Appends series; a series "
                         "UID already in the study is refused.")
    async def add_series(self, info: Info, id: strawberry.ID,
                         series: list[ImagingStudySeriesInput],
                         versionId: Version = None) -> ImagingStudy:
        guard = _guard(info, "u", "ImagingStudyAddSeries")
        return _touched(info, await info.context.repo.add_series(
            id, _batch(series, "series"), versionId, guard))

    @strawberry.mutation(name="ImagingStudyAddInstances", description="Appends up to 10,000 "
                         "instances to one series. Re-sending an instance identical to the "
                         "stored one is a no-op, so retries are safe.")
    async def add_instances(self, info: Info, id: strawberry.ID, seriesUid: str,
                            instances: list[ImagingStudySeriesInstanceInput],
                            versionId: Version = None) -> ImagingStudy:
        guard = _guard(info, "u", "ImagingStudyAddInstances")
        return _touched(info, await info.context.repo.add_instances(
            id, seriesUid, _batch(instances, "instances"), versionId, guard))

    @strawberry.mutation(name="ImagingStudyRemoveSeries", description="Removes series by UID.")
    async def remove_series(self, info: Info, id: strawberry.ID, uids: list[str],
                            versionId: Version = None) -> ImagingStudy:
        guard = _guard(info, "u", "ImagingStudyRemoveSeries")
        return _touched(info, await info.context.repo.remove_series(id, uids, versionId, guard))

    @strawberry.mutation(name="ImagingStudyRemoveInstances", description="Removes instances "
                         "of one series by UID.")
    async def remove_instances(self, info: Info, id: strawberry.ID, seriesUid: str,
                               uids: list[str], versionId: Version = None) -> ImagingStudy:
        guard = _guard(info, "u", "ImagingStudyRemoveInstances")
        return _touched(info, await info.context.repo.remove_instances(
            id, seriesUid, uids, versionId, guard))


@strawberry.type(description="What became of one imported resource.")
class ImagingStudyImportResult:
    index: int = strawberry.field(description="Position of the entry in the Bundle (0 for a "
                                  "single resource).")
    status: str = strawberry.field(description="created, updated, unchanged or rejected.")
    id: strawberry.ID | None = strawberry.field(description="The study's id (null when "
                                                "rejected).")
    outcome: JSON | None = strawberry.field(description="A FHIR OperationOutcome saying why "
                                            "the entry was rejected, or, in a transaction that "
                                            "failed, why this entry's write could not be undone "
                                            "(another client wrote the study since).")


@strawberry.type
class ImportMutation:
    @strawberry.mutation(name="ImagingStudyImport", description="Imports one ImagingStudy or "
                         "a Bundle (collection, batch, transaction, searchset) of them. An entry"
                         " with a Study Instance UID identifier is matched on it (re-importing "
                         "changes nothing); one whose id exists updates it; the rest are "
                         "created. A transaction is all-or-nothing. dryRun validates only.")
    async def import_(self, info: Info, resource: JSON,
                      dryRun: bool = False) -> list[ImagingStudyImportResult]:
        guard = _guard(info, "cu", "ImagingStudyImport")
        results = await Importer(info.context.repo, dry_run=dryRun,
                                 guard=_recording(info, guard)).run(resource)
        return [ImagingStudyImportResult(index=r.index, status=r.status, id=r.id,
                                         outcome=r.outcome) for r in results]
