"""The R5 datatypes ImagingStudy uses, as GraphQL types named as FHIR names them. Each reads the
FHIR JSON dict it is given; the schema's default resolver does the dict look-ups."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import strawberry
from strawberry.scalars import JSON

from api.graphql.pure import register
from api.graphql.types.describe import dt
from api.graphql.types.references import resource_field
from store.fhir import definitions as defs
from store.fhir.definitions import DATATYPE_DEFINITIONS as D
from store.fhir.definitions import EXTENSION_VALUE_KEYS


def extension_value(root: dict[str, Any]) -> Any:
    """The value[x] of an extension, whichever type it is."""
    return next((v for k, v in root.items() if k in EXTENSION_VALUE_KEYS), None)


@strawberry.type(
    description="The id and extensions of a primitive value: what R5 JSON writes "
    "in `_name` beside primitive element `name` (json.html#primitive)."
)
class ElementBase:
    id: str | None = strawberry.field(description=defs.PRIMITIVE_PARTS["id"].definition)
    extension: list[Extension] | None = strawberry.field(
        description=defs.PRIMITIVE_PARTS["extension"].definition
    )


def primitive_siblings(
    parent: str, elements: Mapping[str, defs.Element] | None = None
) -> Callable[[type], type]:
    """Gives a type, before `strawberry.type` makes it one, a `_name` field for each of its
    primitive fields `name` that may carry an id or extensions in R5 (a list aligned with
    `name` for a repeating one), as FHIR GraphQL names them. `parent` is the R5 datatype or
    ImagingStudy path whose definitions say which fields those are."""

    def add(cls: type) -> type:
        table = (
            elements
            if elements is not None
            else (defs.DATATYPES.get(parent) or defs.imaging_study()[parent])
        )
        for name in list(inspect.get_annotations(cls)):
            element = table.get(name)
            if element is None or not defs.takes_extensions(parent, element):
                continue
            cls.__annotations__[f"_{name}"] = (
                list[ElementBase | None] | None if element.many else ElementBase | None
            )
            setattr(
                cls,
                f"_{name}",
                strawberry.field(description=f"The id and extensions of {name} (R5 JSON _{name})."),
            )
        return cls

    return add


@strawberry.type(description=D["Extension"])
@primitive_siblings("Extension", {k: defs.Element(k, t) for k, t in EXTENSION_VALUE_KEYS.items()})
class Extension:
    url: str = dt("Extension", "url")
    extension: list[Extension] | None = dt("Extension", "extension")
    valueBoolean: bool | None = strawberry.field(description="Value of extension (boolean).")
    valueInteger: int | None = strawberry.field(description="Value of extension (integer).")
    valueUnsignedInt: int | None = strawberry.field(description="Value of extension (unsignedInt).")
    valuePositiveInt: int | None = strawberry.field(description="Value of extension (positiveInt).")
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
        description="Value of extension (CodeableConcept)."
    )
    valueCoding: Coding | None = strawberry.field(description="Value of extension (Coding).")
    valueIdentifier: Identifier | None = strawberry.field(
        description="Value of extension (Identifier)."
    )
    valuePeriod: Period | None = strawberry.field(description="Value of extension (Period).")
    valueReference: Reference | None = strawberry.field(
        description="Value of extension (Reference)."
    )

    # (graphql_type: the value is any JSON value; ignore: strawberry-graphql/strawberry#1929,
    # the decorator with arguments is typed as returning Any.)
    @strawberry.field(
        graphql_type=JSON | None,  # type: ignore[untyped-decorator]
        description="The value[x] of the extension, whatever its type, as JSON "
        "(covers the R5 types that have no typed field here).",
    )
    def value(self, root: strawberry.Parent[dict[str, Any]]) -> Any:
        return extension_value(root)


register("Extension", "value", extension_value)  # the compiled plans call it directly


@strawberry.type(description=D["Coding"])
@primitive_siblings("Coding")
class Coding:
    id: str | None = dt("Coding", "id")
    extension: list[Extension] | None = dt("Coding", "extension")
    system: str | None = dt("Coding", "system")
    version: str | None = dt("Coding", "version")
    code: str | None = dt("Coding", "code")
    display: str | None = dt("Coding", "display")
    userSelected: bool | None = dt("Coding", "userSelected")


@strawberry.type(description=D["CodeableConcept"])
@primitive_siblings("CodeableConcept")
class CodeableConcept:
    id: str | None = dt("CodeableConcept", "id")
    extension: list[Extension] | None = dt("CodeableConcept", "extension")
    coding: list[Coding] | None = dt("CodeableConcept", "coding")
    text: str | None = dt("CodeableConcept", "text")


@strawberry.type(description=D["Period"])
@primitive_siblings("Period")
class Period:
    id: str | None = dt("Period", "id")
    extension: list[Extension] | None = dt("Period", "extension")
    start: str | None = dt("Period", "start")
    end: str | None = dt("Period", "end")


@strawberry.type(description=D["Identifier"])
@primitive_siblings("Identifier")
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
@primitive_siblings("Reference")
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
@primitive_siblings("Annotation")
class Annotation:
    id: str | None = dt("Annotation", "id")
    extension: list[Extension] | None = dt("Annotation", "extension")
    authorReference: Reference | None = dt("Annotation", "authorReference")
    authorString: str | None = dt("Annotation", "authorString")
    time: str | None = dt("Annotation", "time")
    text: str = dt("Annotation", "text")


@strawberry.type(description=D["Meta"])
@primitive_siblings("Meta")
class Meta:
    id: str | None = dt("Meta", "id")
    extension: list[Extension] | None = dt("Meta", "extension")
    versionId: str | None = dt("Meta", "versionId")
    lastUpdated: str | None = dt("Meta", "lastUpdated")
    source: str | None = dt("Meta", "source")
    profile: list[str | None] | None = dt("Meta", "profile")
    security: list[Coding] | None = dt("Meta", "security")
    tag: list[Coding] | None = dt("Meta", "tag")


@strawberry.type(description=D["Narrative"])
@primitive_siblings("Narrative")
class Narrative:
    id: str | None = dt("Narrative", "id")
    extension: list[Extension] | None = dt("Narrative", "extension")
    status: str = dt("Narrative", "status")
    div: str = dt("Narrative", "div")
