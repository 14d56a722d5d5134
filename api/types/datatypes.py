"""The R5 datatypes ImagingStudy uses, as GraphQL types named as FHIR names them. Each reads the
FHIR JSON dict it is given; the schema's default resolver does the dict look-ups."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from api.types.describe import dt
from api.types.references import resource_field
from store.fhir.definitions import DATATYPE_DEFINITIONS as D
from store.fhir.definitions import EXTENSION_VALUE_KEYS


def extension_value(root: dict[str, Any]) -> Any:
    """The value[x] of an extension, whichever type it is."""
    return next((v for k, v in root.items() if k in EXTENSION_VALUE_KEYS), None)


@strawberry.type(description=D["Extension"])
class Extension:
    url: str = dt("Extension", "url")
    extension: list[Extension] | None = dt("Extension", "extension")
    valueBoolean: bool | None = strawberry.field(description="Value of extension (boolean).")
    valueInteger: int | None = strawberry.field(description="Value of extension (integer).")
    valueUnsignedInt: int | None = strawberry.field(description="Value of extension "
                                                    "(unsignedInt).")
    valuePositiveInt: int | None = strawberry.field(description="Value of extension "
                                                    "(positiveInt).")
    valueDecimal: float | None = strawberry.field(description="Value of extension (decimal).")
    valueString: str | None = strawberry.field(description="Value of extension (string).")
    valueCode: str | None = strawberry.field(description="Value of extension (code).")
    valueUri: str | None = strawberry.field(description="Value of extension (uri).")
    valueUrl: str | None = strawberry.field(description="Value of extension (url).")
    valueCanonical: str | None = strawberry.field(description="Value of extension (canonical).")
    valueId: str | None = strawberry.field(description="Value of extension (id).")
    valueMarkdown: str | None = strawberry.field(description="Value of extension (markdown).")
    valueDate: str | None = strawberry.field(description="Value of extension (date).")
    valueDateTime: str | None = strawberry.field(description="Value of extension (dateTime).")
    valueInstant: str | None = strawberry.field(description="Value of extension (instant).")
    valueTime: str | None = strawberry.field(description="Value of extension (time).")
    valueCodeableConcept: CodeableConcept | None = strawberry.field(
        description="Value of extension (CodeableConcept).")
    valueCoding: Coding | None = strawberry.field(description="Value of extension (Coding).")
    valueIdentifier: Identifier | None = strawberry.field(
        description="Value of extension (Identifier).")
    valuePeriod: Period | None = strawberry.field(description="Value of extension (Period).")
    valueReference: Reference | None = strawberry.field(
        description="Value of extension (Reference).")

    @strawberry.field(description="The value[x] of the extension, whatever its type, as JSON "
                      "(covers the R5 types that have no typed field here).")
    def value(self, root: strawberry.Parent[dict[str, Any]]) -> JSON | None:
        return extension_value(root)


@strawberry.type(description=D["Coding"])
class Coding:
    id: str | None = dt("Coding", "id")
    extension: list[Extension] | None = dt("Coding", "extension")
    system: str | None = dt("Coding", "system")
    version: str | None = dt("Coding", "version")
    code: str | None = dt("Coding", "code")
    display: str | None = dt("Coding", "display")
    userSelected: bool | None = dt("Coding", "userSelected")


@strawberry.type(description=D["CodeableConcept"])
class CodeableConcept:
    id: str | None = dt("CodeableConcept", "id")
    extension: list[Extension] | None = dt("CodeableConcept", "extension")
    coding: list[Coding] | None = dt("CodeableConcept", "coding")
    text: str | None = dt("CodeableConcept", "text")


@strawberry.type(description=D["Period"])
class Period:
    id: str | None = dt("Period", "id")
    extension: list[Extension] | None = dt("Period", "extension")
    start: str | None = dt("Period", "start")
    end: str | None = dt("Period", "end")


@strawberry.type(description=D["Identifier"])
class Identifier:
    id: str | None = dt("Identifier", "id")
    extension: list[Extension] | None = dt("Identifier", "extension")
    use: str | None = dt("Identifier", "use")
    type: CodeableConcept | None = dt("Identifier", "type")
    system: str | None = dt("Identifier", "system")
    value: str | None = dt("Identifier", "value")
    period: Period | None = dt("Identifier", "period")
    assigner: Reference | None = dt("Identifier", "assigner")


@strawberry.type(description=D["Reference"])
class Reference:
    id: str | None = dt("Reference", "id")
    extension: list[Extension] | None = dt("Reference", "extension")
    reference: str | None = dt("Reference", "reference")
    type: str | None = dt("Reference", "type")
    identifier: Identifier | None = dt("Reference", "identifier")
    display: str | None = dt("Reference", "display")
    resource = resource_field  # FHIR GraphQL's resource(optional:, type:): references.py


@strawberry.type(description=D["CodeableReference"])
class CodeableReference:
    id: str | None = dt("CodeableReference", "id")
    extension: list[Extension] | None = dt("CodeableReference", "extension")
    concept: CodeableConcept | None = dt("CodeableReference", "concept")
    reference: Reference | None = dt("CodeableReference", "reference")


@strawberry.type(description=D["Annotation"])
class Annotation:
    id: str | None = dt("Annotation", "id")
    extension: list[Extension] | None = dt("Annotation", "extension")
    authorReference: Reference | None = dt("Annotation", "authorReference")
    authorString: str | None = dt("Annotation", "authorString")
    time: str | None = dt("Annotation", "time")
    text: str = dt("Annotation", "text")


@strawberry.type(description=D["Meta"])
class Meta:
    id: str | None = dt("Meta", "id")
    extension: list[Extension] | None = dt("Meta", "extension")
    versionId: str | None = dt("Meta", "versionId")
    lastUpdated: str | None = dt("Meta", "lastUpdated")
    source: str | None = dt("Meta", "source")
    profile: list[str] | None = dt("Meta", "profile")
    security: list[Coding] | None = dt("Meta", "security")
    tag: list[Coding] | None = dt("Meta", "tag")


@strawberry.type(description=D["Narrative"])
class Narrative:
    id: str | None = dt("Narrative", "id")
    extension: list[Extension] | None = dt("Narrative", "extension")
    status: str = dt("Narrative", "status")
    div: str = dt("Narrative", "div")
