"""Read fields: one async store call at the root, reading only the selected elements;
everything below is dict access."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from api.budget import Shape, reading
from api.context import Info
from api.fhirpath import DESCRIPTION as FHIRPATH
from api.fhirpath import FhirPath
from api.paging import check_count, check_offset
from api.projection import child, study_paths
from api.search_args import searchable
from api.types.connection import ImagingStudyConnection
from api.types.imaging_study import ImagingStudy
from store.search import Params

SORT = ("Sort order: started, _lastUpdated, _id or status, comma-separated, '-' for "
        "descending; ties go by _id. Default -started (newest first; no started date last).")


def _arg(description: str) -> Any:
    return strawberry.argument(description=description)


PageSize = Annotated[int | None, _arg("Page size: default 20, at most the configured cap "
                                      "(1,000 by default).")]
Sort = Annotated[str | None, _arg(SORT)]
FhirPathArg = Annotated[str | None, _arg(FHIRPATH)]


def _selected(info: Info) -> list[Any]:
    return info.selected_fields[0].selections


def _paths(selections: list[Any]) -> set[str] | None:
    """What the store reads: the selection, and `subject`, which the patient confinement
    and the audit record need whatever the query asks for."""
    paths = study_paths(selections)
    return None if paths is None else paths | {"subject"}


@strawberry.type
class Query:
    @strawberry.field(name="ImagingStudy", description="One study by id, or null when there is "
                      "none (or it was deleted).")
    async def imaging_study(self, info: Info, id: strawberry.ID) -> ImagingStudy | None:
        selected = _selected(info)
        return await reading(Shape(selected), lambda: info.context.store.get(
            id, _paths(selected)))

    @strawberry.field(name="ImagingStudyList", description="Studies matching FHIR search "
                      "arguments (all 17 R5 ImagingStudy parameters, _id and _lastUpdated), "
                      "newest first by default.")
    @searchable
    async def imaging_study_list(
        self, info: Info, params: Params,
        _count: PageSize = None,
        _offset: Annotated[int | None, _arg("How many matches to skip first.")] = None,
        _sort: Sort = None,
        fhirpath: FhirPathArg = None,
    ) -> list[ImagingStudy] | None:
        settings = info.context.settings
        count = check_count(_count, settings.list_default_count, settings.list_max_count)
        selected = _selected(info)
        # The expression may read any element: the whole study is read when it is given.
        keep = FhirPath.given(fhirpath, settings.search_max_value_length)
        found = await reading(FhirPath.priced(Shape(selected), keep), lambda: (
            info.context.store.search(params, count, check_offset(_offset), _sort,
                                      None if keep else _paths(selected))))
        return keep.filter(found) if keep else found

    @strawberry.field(name="ImagingStudyConnection", description="Studies matching FHIR search "
                      "arguments as a connection with total count and keyset cursors.")
    @searchable
    async def imaging_study_connection(
        self, info: Info, params: Params,
        _count: PageSize = None,
        _cursor: Annotated[str | None, _arg("A cursor (first, previous, next or last) from an "
                                            "earlier page of the same search.")] = None,
        _sort: Sort = None,
        fhirpath: FhirPathArg = None,
    ) -> ImagingStudyConnection | None:
        store = info.context.store
        settings = info.context.settings
        count = check_count(_count, settings.list_default_count, settings.list_max_count)
        keep = FhirPath.given(fhirpath, settings.search_max_value_length)
        selected = _selected(info)
        edges = child(selected, "edges")
        resource = child(edges, "resource") if edges is not None else None
        wanted = {f.name for f in selected if hasattr(f, "name")}
        if wanted <= {"count", "pagesize", "__typename"}:
            # A count-only query reads no documents at all (but a bad cursor is still bad).
            if _cursor is not None:
                store.check_cursor(params, _cursor, _sort)
            total = await reading(Shape(()), lambda: store.count(params)) \
                if "count" in wanted else None
            return {"count": total, "pagesize": count}  # type: ignore[return-value]
        page = await reading(FhirPath.priced(Shape(resource or ()), keep), lambda: store.page(
            params, count, _cursor, _sort, None if keep else _paths(resource)
            if resource is not None else (), total="count" in wanted), lambda page: page.studies)
        if keep:  # the page's cursors stay the store's: a page may come out shorter
            page.studies = keep.filter(page.studies)
        return {  # type: ignore[return-value]
            "count": page.total, "offset": page.offset, "pagesize": count,
            "first": page.first, "previous": page.previous, "next": page.next,
            "last": page.last,
            "edges": [{"mode": "match", "score": None, "resource": s} for s in page.studies]}

    @strawberry.field(name="ImagingStudyHistory", description="Every stored version of a "
                      "study, newest first. A deleted study keeps its history.")
    async def imaging_study_history(
        self, info: Info, id: strawberry.ID,
        _count: Annotated[int | None, _arg("How many versions at most (default 100).")] = None,
    ) -> list[ImagingStudy] | None:
        count = check_count(_count, 100, info.context.settings.history_max_count)
        selected = _selected(info)
        return await reading(Shape(selected), lambda: info.context.store.history(
            id, count, _paths(selected)))
