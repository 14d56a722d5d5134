"""Arguments on every repeating complex element, as HL7's "Using GraphQL with FHIR" page gives
them ("Field Arguments: List Navigation"): `fhirpath` (a FHIRPath kept items must satisfy), one
field filter per primitive sub-element (`identifier(system: "urn:dicom:uid")`,
`extension(url: ...)`, `coding(system: ..., code: ...)`: items whose sub-element equals the
value), then `_offset` and `_count`, which apply to the filtered list.

The resolvers are generated from the R5 element tables (store/fhir/definitions.py) for each list
field the types declare, and registered in `REPEATING` by (GraphQL type, field): they are pure
functions of the parent dict and the arguments, so each is also registered with the compiled
executor (api/graphql/pure.py), whose plans call them exactly as graphql-core does."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import strawberry

from api.graphql.fhirpath import evaluate, truth
from api.graphql.paging import page
from api.graphql.pure import register
from store.fhir.definitions import Element

Root = strawberry.Parent[dict[str, Any]]
Resolver = Callable[..., Any]
COUNT = "How many to return at most, counted after the filters (default: all)."
OFFSET = "How many to skip first, counted after the filters (default 0)."
FHIRPATH = (
    "A FHIRPath expression evaluated on each item (the item is its context): only the "
    "items for which it is true are kept."
)
NESTED_CAP = 100_000  # above any study the store accepts: a bigger _count is a mistake
PAGING = ("fhirpath", "_count", "_offset")  # the arguments every repeating element takes
# FHIR primitive type codes by the GraphQL scalar their values read as.
_SCALARS: dict[str, type] = {
    "boolean": bool,
    "integer": int,
    "unsignedInt": int,
    "positiveInt": int,
    "integer64": int,
}
# (GraphQL type, field) -> the generated resolver (each also registered in api/graphql/pure.py).
REPEATING: dict[tuple[str, str], Resolver] = {}
# (GraphQL type, field) -> the field filters it takes (the names of primitive sub-elements).
FILTERS: dict[tuple[str, str], tuple[str, ...]] = {}


def is_primitive(type_code: str) -> bool:
    """Whether a FHIR type code names a primitive type (they start in lower case)."""
    return type_code[:1].islower() and type_code != "xhtml"


def filter_elements(elements: dict[str, Element]) -> dict[str, type]:
    """The sub-elements a list of items with these elements can be filtered by: the single
    primitive ones, with their Python type. (Extension's value[x], a choice of types, is
    left to `fhirpath`; decimals, which compare inexactly, too.)"""
    return {
        name: _SCALARS.get(element.type, str)
        for name, element in elements.items()
        if is_primitive(element.type) and not element.many and element.type != "decimal"
    }


def select(
    items: Any,
    where: str,
    filters: dict[str, Any],
    fhirpath: str | None,
    count: int | None,
    offset: int | None,
) -> Any:
    """The items of a repeating element kept by its arguments: field filters (equality), then
    `fhirpath`, then `_offset` and `_count`. A value that is not a list (broken data) is given
    back as it is, for the type checks of the executor to report."""
    if type(items) is not list:
        return items
    if filters:
        items = [
            i
            for i in items
            if type(i) is dict
            and all(k in i and i[k] == v and type(i[k]) is type(v) for k, v in filters.items())
        ]
    if fhirpath is not None:
        items = [i for i in items if truth(evaluate(fhirpath, i, f"{where}(fhirpath)"))]
    return page(items, count, offset, NESTED_CAP)


def _parameter(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _argument(type_: type, description: str) -> Any:
    return Annotated[type_ | None, strawberry.argument(description=description)]


def repeating(
    owner: str, name: str, where: str, elements: dict[str, Element], custom: Resolver | None = None
) -> Resolver:
    """The resolver of list field `name` of GraphQL type `owner` (FHIR path `where`), whose
    items have `elements`. `custom(items, **its_arguments)` applies arguments of its own first
    (series' `uid` and `modality` tokens); generated filters do not repeat its names."""
    own = (
        []
        if custom is None
        else [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in list(inspect.signature(custom, eval_str=True).parameters.values())[1:]
        ]
    )
    taken = {p.name for p in own}
    filters = {k: v for k, v in filter_elements(elements).items() if k not in taken}
    own_names = tuple(p.name for p in own)

    def resolve(root: dict[str, Any], **arguments: Any) -> Any:
        items = root.get(name)
        if custom is not None and type(items) is list:
            items = custom(items, **{k: arguments.get(k) for k in own_names})
        wanted = {k: arguments[k] for k in filters if arguments.get(k) is not None}
        return select(
            items,
            where,
            wanted,
            arguments.get("fhirpath"),
            arguments.get("_count"),
            arguments.get("_offset"),
        )

    parameters = [
        inspect.Parameter("root", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Root),
        *own,
        *(
            _parameter(k, _argument(t, f"Only the items whose `{k}` equals this value."))
            for k, t in filters.items()
        ),
        _parameter("fhirpath", _argument(str, FHIRPATH)),
        _parameter("_count", _argument(int, COUNT)),
        _parameter("_offset", _argument(int, OFFSET)),
    ]
    resolve.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    resolve.__name__ = f"{owner}_{name}"
    REPEATING[(owner, name)] = resolve
    # Without arguments `select` keeps every item and `custom` filters on nothing: the stored
    # list as it is, which a plan reads inline.
    register(owner, name, resolve, stored_without_arguments=True)
    FILTERS[(owner, name)] = (*own_names, *filters)
    return resolve


def type_name(path: str) -> str:
    """The GraphQL type of an element path: ImagingStudy.series -> ImagingStudySeries."""
    first, *rest = path.split(".")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)
