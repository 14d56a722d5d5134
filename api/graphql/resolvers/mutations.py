"""Write fields. Each is one atomic compare-and-set in the store; `versionId`, when given, must
equal the stored meta.versionId. Inputs arrive as FHIR JSON (see api/graphql/mirror.py): the GraphQL
argument types stay the typed inputs; the resolvers get their values as dicts."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import strawberry
from strawberry.scalars import JSON

from api.graphql.context import Info
from api.graphql.inputs import (
    ImagingStudyInput,
    ImagingStudySeriesInput,
    ImagingStudySeriesInstanceInput,
)
from api.graphql.types.imaging_study import ImagingStudy
from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, fail

MAX_BATCH = 10_000
_STUDY = ImagingStudy | None
Version = Annotated[
    str | None,
    strawberry.argument(
        description="Optimistic concurrency: when given, the write applies only if the stored "
        "meta.versionId equals it (else VERSION_CONFLICT). When omitted, the write applies "
        "atomically to the latest version."
    ),
]
# The typed inputs in the schema; their values as FHIR JSON in the resolvers (see mirror.py).
StudyJson = Annotated[Study, strawberry.argument(graphql_type=ImagingStudyInput)]
SeriesJson = Annotated[
    list[dict[str, Any]], strawberry.argument(graphql_type=list[ImagingStudySeriesInput])
]
InstancesJson = Annotated[
    list[dict[str, Any]], strawberry.argument(graphql_type=list[ImagingStudySeriesInstanceInput])
]


@strawberry.type(description="The outcome of a delete.")
class ImagingStudyDeleteResult:
    id: strawberry.ID = strawberry.field(description="The deleted study's id.")
    deleted: bool = strawberry.field(
        description="Always true: the study left reads and lists; its history stays."
    )


def _batch(items: list[Any], name: str) -> list[Any]:
    if len(items) > MAX_BATCH:
        raise fail(BAD_USER_INPUT, name, f"at most {MAX_BATCH} {name} per call (got {len(items)})")
    return items


# Each write answers with the study as FHIR JSON, read by the GraphQL type `graphql_type` names.
# `@strawberry.mutation(...)` with arguments is typed as returning Any
# (strawberry-graphql/strawberry#1929), hence ignore[untyped-decorator].
@strawberry.type
class Mutation:
    @strawberry.mutation(
        name="ImagingStudyCreate",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Creates a study. The server "
        "assigns `id` when absent. With `ifNoneExist` (a FHIR search string such"
        " as identifier=urn:dicom:uid|urn:oid:1.2.3) an existing match is "
        "returned unchanged instead; several matches are an error.",
    )
    async def create(self, info: Info, res: StudyJson, ifNoneExist: str | None = None) -> Study:
        study, _ = await info.context.store.create(res, ifNoneExist)
        return study

    @strawberry.mutation(
        name="ImagingStudyUpdate",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Replaces a study whole, under the status lifecycle.",
    )
    async def update(
        self, info: Info, id: strawberry.ID, res: StudyJson, versionId: Version = None
    ) -> Study:
        return await info.context.store.update(id, res, versionId)

    @strawberry.mutation(
        name="ImagingStudyDelete",  # type: ignore[untyped-decorator]
        description="Deletes a study: it leaves reads and lists; its history stays.",
    )
    async def delete(
        self, info: Info, id: strawberry.ID, versionId: Version = None
    ) -> ImagingStudyDeleteResult | None:
        await info.context.store.delete(id, versionId)
        return ImagingStudyDeleteResult(id=id, deleted=True)

    @strawberry.mutation(
        name="ImagingStudySetStatus",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Moves a study through its "
        "lifecycle (registered, available, cancelled, entered-in-error, "
        "unknown). Setting the current status changes nothing.",
    )
    async def set_status(
        self, info: Info, id: strawberry.ID, status: str, versionId: Version = None
    ) -> Study:
        return await info.context.store.set_status(id, status, versionId)

    @strawberry.mutation(
        name="ImagingStudyAddSeries",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Appends series; a series UID already in the study is refused.",
    )
    async def add_series(
        self, info: Info, id: strawberry.ID, series: SeriesJson, versionId: Version = None
    ) -> Study:
        return await info.context.store.add_series(id, _batch(series, "series"), versionId)

    @strawberry.mutation(
        name="ImagingStudyAddInstances",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Appends up to 10,000 "
        "instances to one series. Re-sending an instance identical to the "
        "stored one is a no-op, so retries are safe.",
    )
    async def add_instances(
        self,
        info: Info,
        id: strawberry.ID,
        seriesUid: str,
        instances: InstancesJson,
        versionId: Version = None,
    ) -> Study:
        return await info.context.store.add_instances(
            id, seriesUid, _batch(instances, "instances"), versionId
        )

    @strawberry.mutation(
        name="ImagingStudyRemoveSeries",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Removes series by UID.",
    )
    async def remove_series(
        self, info: Info, id: strawberry.ID, uids: list[str], versionId: Version = None
    ) -> Study:
        return await info.context.store.remove_series(id, uids, versionId)

    @strawberry.mutation(
        name="ImagingStudyRemoveInstances",  # type: ignore[untyped-decorator]
        graphql_type=_STUDY,
        description="Removes instances of one series by UID.",
    )
    async def remove_instances(
        self,
        info: Info,
        id: strawberry.ID,
        seriesUid: str,
        uids: list[str],
        versionId: Version = None,
    ) -> Study:
        return await info.context.store.remove_instances(id, seriesUid, uids, versionId)


@strawberry.type(description="What became of one imported resource.")
class ImagingStudyImportResult:
    index: int = strawberry.field(
        description="Position of the entry in the Bundle (0 for a single resource)."
    )
    status: str = strawberry.field(description="created, updated, unchanged or rejected.")
    id: strawberry.ID | None = strawberry.field(description="The study's id (null when rejected).")
    outcome: JSON | None = strawberry.field(
        description="A FHIR OperationOutcome saying why "
        "the entry was rejected, or, in a transaction that "
        "failed, why this entry's write could not be undone "
        "(another client wrote the study since)."
    )


class _ImportRow(TypedDict):
    """An ImagingStudyImportResult as the resolver answers it."""

    index: int
    status: str
    id: str | None
    outcome: dict[str, Any] | None


# Rows answered as dicts (see the comment in import_), hence graphql_type; the ignore as above.
@strawberry.type
class ImportMutation:
    @strawberry.mutation(
        name="ImagingStudyImport",  # type: ignore[untyped-decorator]
        graphql_type=list[ImagingStudyImportResult] | None,
        description="Imports one ImagingStudy or a Bundle (collection, "
        "batch, transaction, searchset) of them. An entry with a Study "
        "Instance UID identifier is matched on it (re-importing changes "
        "nothing); one whose id exists updates it; the rest are created. A "
        "transaction is all-or-nothing. dryRun validates only.",
    )
    async def import_(self, info: Info, resource: JSON, dryRun: bool = False) -> list[_ImportRow]:
        results = await info.context.store.importer(dry_run=dryRun).run(resource)
        # Plain dicts, which the compiled executor completes in one pass (api/graphql/execution.py):
        # graphql-core completing 30,000 result objects one by one held the loop.
        return [
            {"index": r.index, "status": r.status, "id": r.id, "outcome": r.outcome}
            for r in results
        ]
