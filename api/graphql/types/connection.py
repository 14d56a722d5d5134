"""The FHIR GraphQL connection shape for paged search results."""

from __future__ import annotations

import strawberry

from api.graphql.types.imaging_study import ImagingStudy


@strawberry.type(description="One search result: the study and how it matched.")
class ImagingStudyConnectionEdge:
    mode: str | None = strawberry.field(description="Why the study is in the result: 'match'.")
    score: float | None = strawberry.field(description="Relevance score; not computed (null).")
    resource: ImagingStudy | None = strawberry.field(description="The matching study.")


@strawberry.type(
    description="A page of ImagingStudy search results with opaque keyset "
    "cursors: walking `next` to the end returns every study that matched "
    "throughout exactly once, even while others insert and delete studies."
)
class ImagingStudyConnection:
    count: int | None = strawberry.field(description="Total number of matches.")
    offset: int | None = strawberry.field(description="Position of this page's first result.")
    pagesize: int | None = strawberry.field(description="The page size asked for (_count).")
    first: str | None = strawberry.field(description="Cursor of the first page.")
    previous: str | None = strawberry.field(
        description="Cursor of the page before; null on the first page."
    )
    next: str | None = strawberry.field(
        description="Cursor of the page after; null on the last page."
    )
    last: str | None = strawberry.field(description="Cursor of the last page.")
    edges: list[ImagingStudyConnectionEdge] | None = strawberry.field(
        description="The results of this page."
    )
