"""GraphQL descriptions taken from the R5 definitions, so GraphiQL shows the standard's text."""

from __future__ import annotations

from typing import Any

import strawberry

from store.fhir import definitions as defs


def element(path: str) -> str:
    """The R5 definition of an ImagingStudy element, e.g. "ImagingStudy.series.uid"."""
    parent, _, name = path.rpartition(".")
    found = defs.imaging_study()[parent][name]
    return found.definition + (" Required." if found.required else "")


def datatype_element(type_: str, name: str) -> str:
    found = defs.DATATYPES[type_][name]
    return found.definition + (" Required." if found.required else "")


def field(path: str, **kwargs: Any) -> Any:
    """A strawberry field described by the ImagingStudy element at `path`."""
    return strawberry.field(description=element(path), **kwargs)


def dt(type_: str, name: str, **kwargs: Any) -> Any:
    """A strawberry field described by element `name` of R5 datatype `type_`."""
    return strawberry.field(description=datatype_element(type_, name), **kwargs)
