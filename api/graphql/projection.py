"""Which stored elements a query needs, read from its selection set, so the store reads only
those: a worklist that does not select `series.instance` never loads instances."""

from __future__ import annotations

from typing import Any

from api.graphql.fhirpath import names_read
from api.graphql.selection import Selection
from store.fhir.definitions import imaging_study

_WHOLE = {"fhirJson"}  # fields that read the whole stored study
# Lists that page or filter in their resolver: they need their ordering and filter elements
# (and those their arguments read: see _filtered).
_CONTAINERS = {
    ("", "series"): ("uid", "number", "modality"),
    ("series", "instance"): ("uid", "number"),
}


def study_paths(selection: Selection, prefix: str = "") -> set[str] | None:
    """FHIR element paths (`series.instance.uid`) that a selection on ImagingStudy reads;
    None when it needs the whole study (fhirJson)."""
    paths: set[str] = set()
    for field in selection.fields():
        if field.name in _WHOLE:
            return None
        path = f"{prefix}.{field.name}" if prefix else field.name
        needs = _CONTAINERS.get((prefix, field.name))
        if needs is None:
            paths.add(path)  # a whole element: a datatype or a primitive
            if _follows(field.below()):
                paths.add("contained")  # where a #id reference resolves
            continue
        paths.update(f"{path}.{name}" for name in needs)
        read = _filtered(field.arguments, path)
        if read is None:
            paths.add(path)  # a FHIRPath that may read anything: the whole list
            continue
        paths |= read
        below = study_paths(field.below(), path)
        if below is None:
            return None
        paths |= below
    return paths


def _follows(selection: Selection) -> bool:
    """Whether a selection below a datatype follows a reference (Reference.resource)."""
    return any(field.name == "resource" or _follows(field.below()) for field in selection.fields())


def _filtered(arguments: dict[str, Any], path: str) -> set[str] | None:
    """The elements a container's filters read (field filters, the names its `fhirpath`
    mentions), so the items are filtered on their stored values; None: all of them."""
    elements = imaging_study()[f"ImagingStudy.{path}"]
    read = {
        f"{path}.{name}"
        for name, value in arguments.items()
        if value is not None and name in elements
    }
    expression = arguments.get("fhirpath")
    if expression is not None:
        names = names_read(str(expression), elements)
        if names is None:
            return None
        read |= {f"{path}.{name}" for name in names}
    return read
