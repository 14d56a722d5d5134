"""Input types mirroring the output types field for field, and their conversion to FHIR JSON.

The inputs are generated from the output types so the two shapes cannot drift apart. Every input
field is nullable: required elements are checked by the FHIR rules instead, which report all
missing elements of a write at once, each by its FHIRPath, rather than stopping at the first."""

from __future__ import annotations

import sys
from typing import Any

import strawberry
from strawberry import ID
from strawberry.scalars import JSON
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition

from api.types.datatypes import Extension
from api.types.imaging_study import ImagingStudy, ImagingStudySeries, ImagingStudySeriesInstance

_MODULE = sys.modules[__name__]
_SCALARS = {str: "str", int: "int", bool: "bool", float: "float", JSON: "JSON", ID: "ID"}
# Output-only fields: computed views that have no place in a write.
_SKIP = {"Extension": {"value"}}


def _input_name(cls: type) -> str:
    return cls.__strawberry_definition__.name + "Input"


def _convert(type_: Any) -> str:
    """The input annotation for an output field type, as source text evaluated in this
    module (so recursive types such as Extension can name themselves)."""
    if isinstance(type_, StrawberryOptional):
        return _convert(type_.of_type)
    if isinstance(type_, StrawberryList):
        return f"list[{_convert(type_.of_type)}]"
    if has_object_definition(type_):
        mirror(type_)
        return _input_name(type_)
    return _SCALARS[type_]


def mirror(cls: type) -> type:
    """The input type of output type `cls` (`Coding` -> `CodingInput`), made once."""
    name = _input_name(cls)
    if hasattr(_MODULE, name):
        return getattr(_MODULE, name)
    definition = cls.__strawberry_definition__
    namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": {}}
    made = type(name, (), namespace)
    setattr(_MODULE, name, made)  # registered first: recursive types refer to themselves
    for f in definition.fields:
        if f.python_name in _SKIP.get(definition.name, ()):
            continue
        namespace["__annotations__"][f.python_name] = f"{_convert(f.type)} | None"
        setattr(made, f.python_name, strawberry.field(description=f.description,
                                                      default=None))
    made.__annotations__ = namespace["__annotations__"]
    result = strawberry.input(made, name=name, description=definition.description)
    setattr(_MODULE, name, result)
    return result


def to_fhir(value: Any) -> Any:
    """An input object (or list of them) as FHIR JSON: unset and null fields left out."""
    if isinstance(value, list):
        return [to_fhir(v) for v in value]
    if has_object_definition(value):
        out = {}
        for f in value.__strawberry_definition__.fields:
            item = getattr(value, f.python_name)
            if item is not None and item is not strawberry.UNSET:
                out[f.python_name] = to_fhir(item)
        return out
    return value


ImagingStudyInput = mirror(ImagingStudy)
ImagingStudySeriesInput = mirror(ImagingStudySeries)
ImagingStudySeriesInstanceInput = mirror(ImagingStudySeriesInstance)
ExtensionInput = mirror(Extension)
