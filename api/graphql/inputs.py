"""Input types mirroring the output types field for field, and their values as FHIR JSON.

The inputs are generated from the output types so the two shapes cannot drift apart. Every input
field is nullable: required elements are checked by the FHIR rules instead, which report all
missing elements of a write at once, each by its FHIRPath, rather than stopping at the first.

Resolvers receive these inputs as FHIR JSON dicts, never as Strawberry input objects: a
50,000-instance study is a million values, and building an object for each of them, only to
turn it back into JSON for the rules, cost seconds of the event loop. So graphql-core's own
coercion, which has already checked every value against the input type, leaves out the nulls
of each input object as it builds it (`without_nulls`, installed by `fhir_json_inputs`), and
Strawberry hands the result on as it is (`from_input`). The schema is unchanged."""

from __future__ import annotations

import sys
from typing import Any

import strawberry
from graphql import GraphQLInputObjectType, GraphQLSchema
from strawberry import ID
from strawberry.scalars import JSON
from strawberry.types.base import (
    StrawberryList,
    StrawberryOptional,
    get_object_definition,
    has_object_definition,
)

from api.graphql.types.datatypes import Extension
from api.graphql.types.imaging_study import (
    ImagingStudy,
    ImagingStudySeries,
    ImagingStudySeriesInstance,
)

_MODULE = sys.modules[__name__]
_SCALARS = {str: "str", int: "int", bool: "bool", float: "float", JSON: "JSON", ID: "ID"}
# Output-only fields: computed views that have no place in a write.
_SKIP = {"Extension": {"value"}, "Reference": {"resource"}}
_MIRRORED: list[str] = []  # the GraphQL names of the input types made by `mirror`


def _input_name(cls: type) -> str:
    return get_object_definition(cls, strict=True).name + "Input"


def _convert(type_: Any) -> str:
    """The input annotation for an output field type, as source text evaluated in this
    module (so recursive types such as Extension can name themselves)."""
    if isinstance(type_, StrawberryOptional):
        return _convert(type_.of_type)
    if isinstance(type_, StrawberryList):
        # Items stay nullable where the output's are: a repeating primitive and its `_name`
        # list carry nulls to stay aligned (R5 JSON).
        optional = " | None" if isinstance(type_.of_type, StrawberryOptional) else ""
        return f"list[{_convert(type_.of_type)}{optional}]"
    if has_object_definition(type_):
        mirror(type_)
        return _input_name(type_)
    return _SCALARS[type_]


def mirror(cls: type) -> type:
    """The input type of output type `cls` (`Coding` -> `CodingInput`), made once."""
    name = _input_name(cls)
    if hasattr(_MODULE, name):
        made_before: type = getattr(_MODULE, name)
        return made_before
    definition = get_object_definition(cls, strict=True)
    namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": {}}
    made = type(name, (), namespace)
    setattr(_MODULE, name, made)  # registered first: recursive types refer to themselves
    for f in definition.fields:
        if f.python_name in _SKIP.get(definition.name, ()):
            continue
        namespace["__annotations__"][f.python_name] = f"{_convert(f.type)} | None"
        setattr(made, f.python_name, strawberry.field(description=f.description, default=None))
    made.__annotations__ = namespace["__annotations__"]
    result = strawberry.input(made, name=name, description=definition.description)
    # Strawberry passes the value of an input of this type, coerced by graphql-core, to this
    # hook instead of building an object: the value is already FHIR JSON (see fhir_json_inputs).
    get_object_definition(result, strict=True).from_input = _as_coerced
    _MIRRORED.append(name)
    setattr(_MODULE, name, result)
    return result


def _as_coerced(cls: type, value: Any, context: Any) -> Any:
    return value


def without_nulls(value: dict[str, Any]) -> dict[str, Any]:
    """An input object as FHIR JSON: graphql-core has set every field the caller left out to
    its published default, null; FHIR JSON has no nulls, so these and explicit nulls go."""
    return {name: item for name, item in value.items() if item is not None}


def fhir_json_inputs(schema: GraphQLSchema) -> None:
    """Makes graphql-core coerce the values of the mirrored input types to FHIR JSON."""
    for name in _MIRRORED:
        input_type = schema.type_map[name]
        assert isinstance(input_type, GraphQLInputObjectType)  # `mirror` made it an input
        # graphql-core takes out_type as a constructor argument and stores it the same way,
        # but declares the default as a method, so its own assignment is unchecked too.
        input_type.out_type = without_nulls  # type: ignore[method-assign]


ImagingStudyInput = mirror(ImagingStudy)
ImagingStudySeriesInput = mirror(ImagingStudySeries)
ImagingStudySeriesInstanceInput = mirror(ImagingStudySeriesInstance)
ExtensionInput = mirror(Extension)
