"""The naive baseline: Strawberry types built as objects from the document, then resolved
attribute by attribute, the way most Strawberry + MongoDB services are written. Benchmarks
only; it covers the fields the scenarios select."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig


@strawberry.type
class Coding:
    system: str | None
    code: str | None
    display: str | None


@strawberry.type
class CodeableConcept:
    coding: list[Coding] | None
    text: str | None


@strawberry.type
class Reference:
    reference: str | None
    display: str | None


@strawberry.type
class CodeableReference:
    concept: CodeableConcept | None
    reference: Reference | None


@strawberry.type
class ImagingStudySeriesPerformer:
    function: CodeableConcept | None
    actor: Reference


@strawberry.type
class ImagingStudySeriesInstance:
    uid: str
    sopClass: Coding
    number: int | None
    title: str | None


@strawberry.type
class ImagingStudySeries:
    uid: str
    number: int | None
    modality: CodeableConcept
    description: str | None
    numberOfInstances: int | None
    endpoint: list[Reference] | None
    bodySite: CodeableReference | None
    laterality: CodeableConcept | None
    started: str | None
    performer: list[ImagingStudySeriesPerformer] | None
    _instances: strawberry.Private[list[ImagingStudySeriesInstance]]

    @strawberry.field
    def instance(
        self, _count: int | None = None, _offset: int | None = None
    ) -> list[ImagingStudySeriesInstance]:
        start = _offset or 0
        return self._instances[start : None if _count is None else start + _count]


@strawberry.type
class ImagingStudy:
    id: str
    status: str
    started: str | None
    description: str | None
    numberOfSeries: int | None
    numberOfInstances: int | None
    subject: Reference
    modality: list[CodeableConcept] | None
    series: list[ImagingStudySeries] | None


def _coding(d: dict[str, Any] | None) -> Coding | None:
    return (
        Coding(system=d.get("system"), code=d.get("code"), display=d.get("display")) if d else None
    )


def _concept(d: dict[str, Any] | None) -> CodeableConcept | None:
    if not d:
        return None
    return CodeableConcept(
        coding=[_coding(c) for c in d.get("coding", [])],  # type: ignore
        text=d.get("text"),
    )


def _ref(d: dict[str, Any] | None) -> Reference | None:
    return Reference(reference=d.get("reference"), display=d.get("display")) if d else None


def to_study(d: dict[str, Any]) -> ImagingStudy:
    """The whole typed object tree of one study."""
    series = [
        ImagingStudySeries(
            uid=s["uid"],
            number=s.get("number"),
            modality=_concept(s["modality"]),  # type: ignore
            description=s.get("description"),
            numberOfInstances=s.get("numberOfInstances"),
            endpoint=[_ref(e) for e in s.get("endpoint", [])],  # type: ignore[misc]
            bodySite=CodeableReference(
                concept=_concept(s["bodySite"].get("concept")),
                reference=_ref(s["bodySite"].get("reference")),
            )
            if s.get("bodySite")
            else None,
            laterality=_concept(s.get("laterality")),
            started=s.get("started"),
            performer=[
                ImagingStudySeriesPerformer(
                    function=_concept(p.get("function")), actor=_ref(p["actor"])
                )  # type: ignore
                for p in s.get("performer", [])
            ],
            _instances=[
                ImagingStudySeriesInstance(
                    uid=i["uid"],
                    sopClass=_coding(i["sopClass"]),
                    number=i.get("number"),
                    title=i.get("title"),
                )
                for i in s.get("instance", [])
            ],
        )
        for s in d.get("series", [])
    ]
    return ImagingStudy(
        id=d["id"],
        status=d["status"],
        started=d.get("started"),
        description=d.get("description"),
        numberOfSeries=d.get("numberOfSeries"),
        numberOfInstances=d.get("numberOfInstances"),
        subject=_ref(d["subject"]),  # type: ignore[arg-type]
        modality=[_concept(m) for m in d.get("modality", [])],  # type: ignore
        series=series,
    )


def schema(one: Any, many: Any) -> strawberry.Schema:
    """`one(id)` and `many(**search)` are async functions returning documents."""

    @strawberry.type
    class Query:
        @strawberry.field(name="ImagingStudy")
        async def study(self, id: strawberry.ID) -> ImagingStudy | None:
            doc = await one(id)
            return to_study(doc) if doc else None

        @strawberry.field(name="ImagingStudyList")
        async def studies(
            self,
            modality: list[str] | None = None,
            started: list[str] | None = None,
            _count: int | None = None,
        ) -> list[ImagingStudy]:
            return [to_study(d) for d in await many(modality, started, _count)]

    return strawberry.Schema(Query, config=StrawberryConfig(auto_camel_case=False))
