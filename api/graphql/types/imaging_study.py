"""ImagingStudy and its backbone elements as GraphQL types over the stored FHIR JSON. Every
repeating element takes filters and paging (api/graphql/types/repeating.py), so a viewer can open a
large study, or one page of a large series, in the same request. All of it is synchronous dict
access."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from api.graphql.pure import register
from api.graphql.types.datatypes import (
    Annotation,
    CodeableConcept,
    CodeableReference,
    Coding,
    Extension,
    Identifier,
    Meta,
    Narrative,
    Reference,
    primitive_siblings,
)
from api.graphql.types.describe import element, field
from api.graphql.types.repeating import REPEATING
from store.fhir import Study
from store.fhir.definitions import resource_definition
from store.interop.files import canonical
from store.mongo.search import split_unescaped

Root = strawberry.Parent[dict[str, Any]]


def _has_code(concept: dict[str, Any], token: str) -> bool:
    system, _, code = token.rpartition("|") if "|" in token else (None, "", token)
    return any(
        c.get("code") == code and (system is None or c.get("system", "") == system)
        for c in concept.get("coding") or ()
    )


@strawberry.type(description=element("ImagingStudy.series.instance"))
@primitive_siblings("ImagingStudy.series.instance")
class ImagingStudySeriesInstance:
    id: str | None = field("ImagingStudy.series.instance.id")
    extension: list[Extension] | None = field("ImagingStudy.series.instance.extension")
    modifierExtension: list[Extension] | None = field(
        "ImagingStudy.series.instance.modifierExtension"
    )
    uid: str = field("ImagingStudy.series.instance.uid")
    sopClass: Coding = field("ImagingStudy.series.instance.sopClass")
    number: int | None = field("ImagingStudy.series.instance.number")
    title: str | None = field("ImagingStudy.series.instance.title")


@strawberry.type(description=element("ImagingStudy.series.performer"))
class ImagingStudySeriesPerformer:
    id: str | None = field("ImagingStudy.series.performer.id")
    extension: list[Extension] | None = field("ImagingStudy.series.performer.extension")
    modifierExtension: list[Extension] | None = field(
        "ImagingStudy.series.performer.modifierExtension"
    )
    function: CodeableConcept | None = field("ImagingStudy.series.performer.function")
    actor: Reference = field("ImagingStudy.series.performer.actor")


def _instance_filters(
    items: list[Any],
    uid: Annotated[
        str | None,
        strawberry.argument(
            description="Only instances with this SOP Instance UID (comma-separated: any)."
        ),
    ] = None,
) -> list[Any]:
    if uid is not None:
        wanted = set(uid.split(","))
        items = [i for i in items if i["uid"] in wanted]
    return items


@strawberry.type(description=element("ImagingStudy.series"))
@primitive_siblings("ImagingStudy.series")
class ImagingStudySeries:
    id: str | None = field("ImagingStudy.series.id")
    extension: list[Extension] | None = field("ImagingStudy.series.extension")
    modifierExtension: list[Extension] | None = field("ImagingStudy.series.modifierExtension")
    uid: str = field("ImagingStudy.series.uid")
    number: int | None = field("ImagingStudy.series.number")
    modality: CodeableConcept = field("ImagingStudy.series.modality")
    description: str | None = field("ImagingStudy.series.description")
    numberOfInstances: int | None = field("ImagingStudy.series.numberOfInstances")
    endpoint: list[Reference] | None = field("ImagingStudy.series.endpoint")
    bodySite: CodeableReference | None = field("ImagingStudy.series.bodySite")
    laterality: CodeableConcept | None = field("ImagingStudy.series.laterality")
    specimen: list[Reference] | None = field("ImagingStudy.series.specimen")
    started: str | None = field("ImagingStudy.series.started")
    performer: list[ImagingStudySeriesPerformer] | None = field("ImagingStudy.series.performer")
    instance: list[ImagingStudySeriesInstance] | None = field(
        "ImagingStudy.series.instance", custom=_instance_filters
    )


def _series_filters(
    items: list[Any],
    uid: Annotated[
        str | None,
        strawberry.argument(
            description="Only the series with this Series UID (comma-separated: any)."
        ),
    ] = None,
    modality: Annotated[
        str | None,
        strawberry.argument(
            description="Only series of this modality, as a token: `code` or `system|code` "
            "(comma-separated: any)."
        ),
    ] = None,
) -> list[Any]:
    if uid is not None:
        wanted = set(uid.split(","))
        items = [s for s in items if s["uid"] in wanted]
    if modality is not None:
        tokens = split_unescaped(modality, ",")
        items = [s for s in items if any(_has_code(s["modality"], t) for t in tokens)]
    return items


@strawberry.type(description=resource_definition())
@primitive_siblings("ImagingStudy")
class ImagingStudy:
    resourceType: str = strawberry.field(description="The FHIR resource type: ImagingStudy.")
    id: strawberry.ID | None = strawberry.field(
        description="The logical id of the resource, as used in its URL. Assigned by the "
        "server when a create does not give one."
    )
    meta: Meta | None = field("ImagingStudy.meta")
    implicitRules: str | None = field("ImagingStudy.implicitRules")
    language: str | None = field("ImagingStudy.language")
    text: Narrative | None = field("ImagingStudy.text")
    contained: list[JSON] | None = field("ImagingStudy.contained")
    extension: list[Extension] | None = field("ImagingStudy.extension")
    modifierExtension: list[Extension] | None = field("ImagingStudy.modifierExtension")
    identifier: list[Identifier] | None = field("ImagingStudy.identifier")
    status: str = field("ImagingStudy.status")
    modality: list[CodeableConcept] | None = field("ImagingStudy.modality")
    subject: Reference = field("ImagingStudy.subject")
    encounter: Reference | None = field("ImagingStudy.encounter")
    started: str | None = field("ImagingStudy.started")
    basedOn: list[Reference] | None = field("ImagingStudy.basedOn")
    partOf: list[Reference] | None = field("ImagingStudy.partOf")
    referrer: Reference | None = field("ImagingStudy.referrer")
    endpoint: list[Reference] | None = field("ImagingStudy.endpoint")
    numberOfSeries: int | None = field("ImagingStudy.numberOfSeries")
    numberOfInstances: int | None = field("ImagingStudy.numberOfInstances")
    procedure: list[CodeableReference] | None = field("ImagingStudy.procedure")
    location: Reference | None = field("ImagingStudy.location")
    reason: list[CodeableReference] | None = field("ImagingStudy.reason")
    note: list[Annotation] | None = field("ImagingStudy.note")
    description: str | None = field("ImagingStudy.description")
    series: list[ImagingStudySeries] | None = field("ImagingStudy.series", custom=_series_filters)

    # (graphql_type: the value is FHIR JSON; ignore: strawberry-graphql/strawberry#1929, the
    # decorator with arguments is typed as returning Any.)
    @strawberry.field(
        graphql_type=JSON,  # type: ignore[untyped-decorator]
        description="The stored version as canonical FHIR R5 JSON "
        "(resourceType, id, meta, then every element as stored).",
    )
    def fhirJson(self, root: Root) -> Study:
        return canonical(root)


register("ImagingStudy", "fhirJson", canonical)  # the compiled plans call it directly

# The generated resolvers of the two lists a viewer pages (api/graphql/execution.py, bench).
study_series = REPEATING[("ImagingStudy", "series")]
series_instances = REPEATING[("ImagingStudySeries", "instance")]
