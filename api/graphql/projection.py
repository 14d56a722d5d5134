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


def instance_window(selection: Selection) -> tuple[int, int | None] | None:
    """(offset, count) when the query reads the instances of a study's series only as one
    page (`series { instance(_offset:, _count:) }`, selected once, with no filter, FHIRPath
    or directive that would read other instances), so the store may send just that page;
    else None."""
    series = [f for f in selection.fields() if f.name == "series"]
    if len(series) != 1 or series[0].directives or series[0].arguments.get("fhirpath"):
        return None
    pages = [f for f in series[0].below().fields() if f.name == "instance"]
    if len(pages) != 1 or pages[0].directives:
        return None
    arguments = {k: v for k, v in pages[0].arguments.items() if v is not None}
    offset, count = _whole(arguments.pop("_offset", 0)), _whole(arguments.pop("_count", None))
    if arguments or offset is None or offset < 0 or (count is not None and count < 1):
        return None  # a filter reads every instance; a bad value is the resolver's to refuse
    return (offset, count) if offset or count is not None else None


def _whole(value: Any) -> int | None:
    # The walker gives a literal as Python data and a variable as its value; only a whole
    # number makes a window (anything else is left to the resolver to refuse).
    return value if type(value) is int else None
