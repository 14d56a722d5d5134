"""Read fields: one async store call at the root, reading only the selected elements;
everything below is dict access."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from api.graphql.budget import Shape, reading
from api.graphql.carried import continues
from api.graphql.context import Info
from api.graphql.fhirpath import DESCRIPTION as FHIRPATH
from api.graphql.fhirpath import FhirPath
from api.graphql.paging import check_count, check_offset
from api.graphql.projection import instance_window, study_paths
from api.graphql.search_args import searchable
from api.graphql.selection import Selection
from api.graphql.shared_plans import SharedPlans
from api.graphql.types.connection import ImagingStudyConnection
from api.graphql.types.imaging_study import ImagingStudy
from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, fail
from store.mongo.search import Params

SORT = (
    "Sort order: started, _lastUpdated, _id or status, comma-separated, '-' for "
    "descending; ties go by _id. Default -started (newest first; no started date last)."
)


# What `ImagingStudy(id:)` derives from its selection, kept per selection and variables used
# (api/graphql/shared_plans.py): walking a whole-study selection costs a third of a millisecond.
_SELECTIONS = SharedPlans()


def _arg(description: str) -> Any:
    return strawberry.argument(description=description)


Sort = Annotated[str | None, _arg(SORT)]
FhirPathArg = Annotated[str | None, _arg(FHIRPATH)]


def _selected(info: Info) -> Selection:
    """The field's selection, as it will be executed: every node of its response key,
    fragments expanded, @skip/@include applied (api/graphql/selection.py)."""
    return Selection.of(info)


def _paths(selection: Selection) -> set[str] | None:
    """What the store reads: the selection, and `subject`, which the patient confinement
    and the audit record need whatever the query asks for."""
    paths = study_paths(selection)
    return None if paths is None else paths | {"subject"}


def _placed(study: Study, offset: int) -> Study:
    """A study whose series hold one page of instances (the store sent only the page), each
    page put back at its offset: the positions before it hold None, so the `instance` field's
    own `_offset` and `_count` pick exactly the page, as from the whole list (no other
    selection reads the instances: `instance_window`). An empty page stays empty, placed
    nowhere: the offset is at or past the series' end, and the field's own paging of an empty
    list gives the same empty page. So the positions made never outnumber the instances the
    series holds, whatever offset the caller sends."""
    if not offset or type(study.get("series")) is not list:
        return study
    before: list[Any] = [None] * offset if any(_page_of(s) for s in study["series"]) else []
    return {
        **study,
        "series": [
            {**s, "instance": before + s["instance"]} if _page_of(s) else s for s in study["series"]
        ],
    }


def _page_of(series: Any) -> bool:
    """Whether a series holds a non-empty page of instances."""
    return (
        type(series) is dict and type(series.get("instance")) is list and bool(series["instance"])
    )


def _one_study(
    info: Info,
) -> tuple[frozenset[str] | None, tuple[int, int | None] | None, Shape]:
    """What `ImagingStudy(id:)` derives from its selection alone: the elements the store
    reads, the page of instances it may send instead of all, and the result budget's shape."""
    selected = _selected(info)
    paths = _paths(selected)
    # A directive on the field itself (a reshaping one) may read other instances than a page.
    directives = info._raw_info.field_nodes[0].directives
    window = None if paths is None or directives else instance_window(selected)
    return (None if paths is None else frozenset(paths)), window, Shape(selected.fields())


def _one_id(id: str | None, alias: str | None) -> str:
    """The study id of `ImagingStudy(id:)` or its alias `_id:`, exactly one of them."""
    if (id is None) == (alias is None) and id != alias:
        raise fail(BAD_USER_INPUT, "id", "give the study id as id or as _id, not both")
    found = id if id is not None else alias
    if found is None:
        raise fail(BAD_USER_INPUT, "id", "the study id is required (id, or its alias _id)")
    return found


# Each resolver returns FHIR JSON (the one data shape): its Python annotation says so, and
# `graphql_type` names the GraphQL type that reads it. `@strawberry.field(...)` with arguments is
# typed as returning Any (strawberry-graphql/strawberry#1929), hence ignore[untyped-decorator].
@strawberry.type
class Query:
    @strawberry.field(
        name="ImagingStudy",
        graphql_type=ImagingStudy | None,  # type: ignore[untyped-decorator]
        description="One study by id, or null when there is none (or it was deleted).",
    )
    async def imaging_study(
        self,
        info: Info,
        id: strawberry.ID | None = None,
        _id: Annotated[
            strawberry.ID | None,
            _arg(
                "The same as id (FHIR's search name for it, as some of the FHIR GraphQL page's "
                "examples write it); give one of the two."
            ),
        ] = None,
    ) -> Study | None:
        study_id = _one_id(id, _id)
        kept, window, shape = _SELECTIONS.derived(
            info._raw_info, _one_study, lambda: _one_study(info)
        )
        paths = None if kept is None else set(kept)

        async def read() -> Study | None:
            study = await info.context.store.get(study_id, paths, instances=window)
            if study is None and info.context.rooted_at == study_id:
                # The root of an instance-level $graphql: its answer would have no study.
                raise fail(NOT_FOUND, "ImagingStudy", f"no ImagingStudy with id '{study_id}'")
            return study if study is None or window is None else _placed(study, window[0])

        return await reading(shape, read)

    @strawberry.field(
        name="ImagingStudyList",
        graphql_type=list[ImagingStudy] | None,  # type: ignore[untyped-decorator]
        description="Studies matching FHIR search arguments (all 17 R5 "
        "ImagingStudy parameters, _id and _lastUpdated), newest first by default. "
        "Without _count: every match, or an error when more match than the list "
        "cap (use _count or ImagingStudyConnection).",
    )
    @searchable
    async def imaging_study_list(
        self,
        info: Info,
        params: Params,
        _count: Annotated[
            int | None,
            _arg(
                "At most this many (1 to the list cap, 1,000 by default). Absent: every match, "
                "or an error when more than the cap match."
            ),
        ] = None,
        _offset: Annotated[int | None, _arg("How many matches to skip first.")] = None,
        _sort: Sort = None,
        fhirpath: FhirPathArg = None,
    ) -> list[Study] | None:
        store = info.context.store
        cap = info.context.settings.list_max_count
        offset = check_offset(_offset)
        count = check_count(_count, cap, cap)
        # The expression may read any element: the whole study is read when it is given.
        keep = FhirPath.given(fhirpath, info.context.settings.search_max_value_length)
        if _count is None:
            # "Everything, or an error" (FHIR GraphQL): a count that stops at cap + 1 tells
            # which, however many match.
            matched = await reading(
                Shape(()), lambda: store.count(params, "ImagingStudyList", offset, cap + 1)
            )
            if matched > cap:
                raise fail(
                    BAD_USER_INPUT,
                    "_count",
                    f"more than {cap} studies match (the list "
                    "cap, IMAGING_LIST_MAX_COUNT) and a list without _count returns "
                    "every match: give _count (and _offset) for a page, or use "
                    "ImagingStudyConnection",
                )
        selected = _selected(info)
        found = await reading(
            FhirPath.priced(Shape(selected.fields()), keep),
            lambda: store.search(params, count, offset, _sort, None if keep else _paths(selected)),
        )
        return await keep.filtered(found) if keep else found

    @strawberry.field(
        name="ImagingStudyConnection",  # type: ignore[untyped-decorator]
        graphql_type=ImagingStudyConnection | None,
        description="Studies matching FHIR search arguments as a connection with "
        "total count and keyset cursors.",
    )
    @continues
    @searchable
    async def imaging_study_connection(
        self,
        info: Info,
        params: Params,
        _count: Annotated[
            int | None,
            _arg(
                "Page size: default 20, at most the configured cap (1,000 by default); 0 asks "
                "for the count only."
            ),
        ] = None,
        _cursor: Annotated[
            str | None,
            _arg(
                "A cursor (first, previous, next or last) from an earlier page: it carries its "
                "search, so it may be sent alone; arguments sent with it must be the same."
            ),
        ] = None,
        _sort: Sort = None,
        fhirpath: FhirPathArg = None,
        search: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        store = info.context.store
        settings = info.context.settings
        count = (
            0
            if _count == 0
            else check_count(_count, settings.list_default_count, settings.list_max_count)
        )
        keep = FhirPath.given(fhirpath, settings.search_max_value_length)
        selected = _selected(info)
        edges = selected.child("edges")
        resource = edges.child("resource") if edges is not None else None
        wanted = selected.names()
        if count == 0 or wanted <= {"count", "pagesize"}:
            # A count-only query reads no documents at all (but a bad cursor is still bad).
            if _cursor is not None:
                store.check_cursor(params, _cursor, _sort)
            total = (
                await reading(Shape(()), lambda: store.count(params)) if "count" in wanted else None
            )
            # `_count: 0` is FHIR's way to ask for the total: no edges, no cursors.
            return {"count": total, "pagesize": count, **({"edges": []} if count == 0 else {})}
        page = await reading(
            FhirPath.priced(Shape(resource.fields() if resource else ()), keep),
            lambda: store.page(
                params,
                count,
                _cursor,
                _sort,
                None if keep else _paths(resource) if resource is not None else (),
                total="count" in wanted,
                carry=search,
            ),
            lambda page: page.studies,
        )
        if keep:  # the page's cursors stay the store's: a page may come out shorter
            page.studies = await keep.filtered(page.studies)
        return {
            "count": page.total,
            "offset": page.offset,
            "pagesize": count,
            "first": page.first,
            "previous": page.previous,
            "next": page.next,
            "last": page.last,
            "edges": [{"mode": "match", "score": None, "resource": s} for s in page.studies],
        }

    @strawberry.field(
        name="ImagingStudyHistory",
        graphql_type=list[ImagingStudy] | None,  # type: ignore[untyped-decorator]
        description="Every stored version of a study, newest first. A deleted "
        "study keeps its history.",
    )
    async def imaging_study_history(
        self,
        info: Info,
        id: strawberry.ID,
        _count: Annotated[int | None, _arg("How many versions at most (default 100).")] = None,
    ) -> list[Study] | None:
        count = check_count(_count, 100, info.context.settings.history_max_count)
        selected = _selected(info)
        return await reading(
            Shape(selected.fields()),
            lambda: info.context.store.history(id, count, _paths(selected)),
        )
