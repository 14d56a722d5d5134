"""GraphQL descriptions taken from the R5 definitions, so GraphiQL shows the standard's text."""

from __future__ import annotations

from typing import Any

import strawberry

from api.graphql.types import repeating
from store.fhir import definitions as defs


def element(path: str) -> str:
    """The R5 definition of an ImagingStudy element, e.g. "ImagingStudy.series.uid"."""
    parent, _, name = path.rpartition(".")
    found = defs.imaging_study()[parent][name]
    return found.definition + (" Required." if found.required else "")


def datatype_element(type_: str, name: str) -> str:
    found = defs.DATATYPES[type_][name]
    return found.definition + (" Required." if found.required else "")


def _items(found: defs.Element, path: str) -> dict[str, defs.Element] | None:
    """The elements of the items of a repeating complex element (None: not one)."""
    if not found.many or repeating.is_primitive(found.type):
        return None
    if found.type == "BackboneElement":
        return defs.imaging_study()[path]
    return defs.DATATYPES.get(found.type, {})


def field(path: str, custom: Any = None, **kwargs: Any) -> Any:
    """A strawberry field described by the ImagingStudy element at `path`; a repeating complex
    element gets the list arguments (api/graphql/types/repeating.py), `custom` ones first."""
    parent, _, name = path.rpartition(".")
    items = _items(defs.imaging_study()[parent][name], path)
    if items is not None and "resolver" not in kwargs:
        kwargs["resolver"] = repeating.repeating(
            repeating.type_name(parent), name, path, items, custom
        )
    return strawberry.field(description=element(path), **kwargs)


def dt(type_: str, name: str, **kwargs: Any) -> Any:
    """A strawberry field described by element `name` of R5 datatype `type_`; a repeating
    complex element gets the list arguments (api/graphql/types/repeating.py)."""
    items = _items(defs.DATATYPES[type_][name], f"{type_}.{name}")
    if items is not None and "resolver" not in kwargs:
        kwargs["resolver"] = repeating.repeating(type_, name, f"{type_}.{name}", items)
    return strawberry.field(description=datatype_element(type_, name), **kwargs)
