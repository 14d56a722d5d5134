"""`Reference.resource(optional:, type:)`, FHIR GraphQL's way to follow a reference.

What resolves: `#id`, the resource with that id among the `contained` resources of the study
holding the reference, and `ImagingStudy/<id>` (relative), the stored study, read through the
access gate as any read is. Anything else (another resource type, an absolute URL, a versioned
reference, a logical reference by identifier only) cannot be resolved by this server: an error
(NOT_FOUND), or null with `optional: true`. A study the caller may not read answers exactly as
a missing one. `type:` keeps only a resource of that type (else null, as the FHIR page does).

Stored studies come typed (`... on ImagingStudy`); a contained resource of any type comes as
`OtherResource`: its resourceType, id and whole FHIR JSON. Each study read this way counts
against the operation's budget (values, store seconds) and against its reference reads
(IMAGING_MAX_REFERENCE_READS), since a list of references could otherwise multiply the reads
of one query."""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON

from api.graphql import budget
from api.graphql.limits import rejected
from api.graphql.projection import study_paths
from api.graphql.selection import Selection
from store.fhir.outcome import NOT_FOUND, fail

if TYPE_CHECKING:
    from api.graphql.types.imaging_study import ImagingStudy

ROOT = "ImagingStudy"
_STORED = re.compile(r"ImagingStudy/([A-Za-z0-9\-.]{1,64})")


class _Resolved(dict[str, Any]):
    """A resolved resource: a dict that can carry the mark (strawberry.cast) its union reads."""


@strawberry.type(
    description="A resource this schema has no type for (a contained Patient, "
    "Practitioner, ...), reached through Reference.resource."
)
class OtherResource:
    resourceType: str = strawberry.field(description="Its FHIR resource type.")
    id: str | None = strawberry.field(description="Its id (the # part of a local reference).")

    # (graphql_type: the value is FHIR JSON; ignore: strawberry-graphql/strawberry#1929, the
    # decorator with arguments is typed as returning Any.)
    @strawberry.field(
        graphql_type=JSON,  # type: ignore[untyped-decorator]
        description="The whole resource as FHIR JSON.",
    )
    def fhirJson(self, root: strawberry.Parent[dict[str, Any]]) -> dict[str, Any]:
        return dict(root)


RESOURCE = strawberry.union(
    "Resource",
    description="What a reference points to: a stored "
    "study, or a contained resource of another type.",
)

# Per operation (its budget): the studies its references have read.
_reads: weakref.WeakKeyDictionary[budget.Budget, int] = weakref.WeakKeyDictionary()
# Per operation (its budget): which study holds each element dict read so far, by identity.
_owners: weakref.WeakKeyDictionary[budget.Budget, tuple[int, dict[int, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(v for k, v in item.items() if k != "contained")
        elif isinstance(item, list):
            stack.extend(item)


def _owner(reference: dict[str, Any]) -> dict[str, Any] | None:
    """The study (as read in this operation) that holds this very reference dict."""
    spent = budget.current.get()
    if spent is None:
        return None
    indexed, owners = _owners.get(spent, (0, {}))
    for study in spent.read[indexed:]:  # only the studies read since the last look
        owners.update((id(d), study) for d in _dicts(study))
    _owners[spent] = (len(spent.read), owners)
    return owners.get(id(reference))


async def _stored(study_id: str, info: strawberry.Info) -> dict[str, Any] | None:
    spent = budget.current.get()
    if spent is not None:
        reads = _reads.get(spent, 0) + 1
        if reads > spent.reference_reads:
            raise rejected(
                "studies read through references",
                spent.reference_reads,
                f"more than {spent.reference_reads}",
                "to fit, follow fewer references in one query (IMAGING_MAX_REFERENCE_READS)",
            )
        _reads[spent] = reads
    # The fields that apply to a study: those outside fragments, and in fragments on
    # ImagingStudy or on the union (not those on OtherResource).
    selected = Selection.of(info, on=ROOT)
    paths = study_paths(selected)
    store = info.context.store
    return await budget.reading(
        budget.Shape(selected.fields()),
        lambda: store.get(
            study_id, None if paths is None else paths | {"subject"}, "Reference.resource"
        ),
    )


async def resolve(
    root: strawberry.Parent[dict[str, Any]],
    info: strawberry.Info,
    optional: Annotated[
        bool | None,
        strawberry.argument(
            description="true: null when the reference cannot be resolved, instead of an error."
        ),
    ] = None,
    type: Annotated[
        str | None,
        strawberry.argument(
            description="Only a resource of this type (e.g. ImagingStudy); else null."
        ),
    ] = None,
) -> _Resolved | None:
    from api.graphql.types.imaging_study import ImagingStudy  # the types import each other

    reference = root.get("reference")
    found: dict[str, Any] | None = None
    typed: Any = OtherResource
    if isinstance(reference, str) and reference.startswith("#") and len(reference) > 1:
        owner = _owner(root)
        found = next(
            (
                r
                for r in (owner or {}).get("contained") or ()
                if isinstance(r, dict) and r.get("id") == reference[1:]
            ),
            None,
        )
    elif isinstance(reference, str) and (match := _STORED.fullmatch(reference)):
        if type is not None and type != ROOT:
            return None  # a study is not of the type asked for: not even read
        found, typed = await _stored(match[1], info), ImagingStudy
    if found is None:
        if optional:
            return None
        # The reference itself is not echoed: it is the study's data, not the caller's.
        raise fail(
            NOT_FOUND,
            "Reference.resource",
            "this reference cannot be resolved here "
            "(the server resolves #id to a contained resource and ImagingStudy/<id> to "
            "a study the caller may read); ask resource(optional: true) for null instead",
        )
    if type is not None and found.get("resourceType") != type:
        return None
    return strawberry.cast(typed, _Resolved(found))


# The value is a marked dict (`_Resolved`); the GraphQL type is the union it is read as.
resource_field: Any = strawberry.field(
    resolver=resolve,
    graphql_type=Annotated[
        Annotated["ImagingStudy", strawberry.lazy("api.graphql.types.imaging_study")]
        | OtherResource,
        RESOURCE,
    ]
    | None,
    description="The resource the reference points to (FHIR GraphQL): #id "
    "resolves to a contained resource, ImagingStudy/<id> to the stored study if the caller may "
    "read it; anything else is an error, or null with optional: true.",
)
