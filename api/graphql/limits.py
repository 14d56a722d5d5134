"""Query limits (OWASP GraphQL cheat sheet): length, tokens, depth, aliases and cost, each
refused as QUERY_REJECTED with the limit and the measured value before any store access.

Cost counts every selected field once per object it will be resolved on: a list field's
children are multiplied by its `_count` argument (or its variable, or the variable's default)
when given, else by the most the list can hold: the list default, the series cap per study,
and the instance cap per study spread over the series asked for. `fhirJson` costs what it
returns, a whole study at those caps. The other repeating elements (identifier, coding, ...)
have no cap to bound them, and their `_count` can only shorten them: they are priced at one
item whatever their arguments, so an argument never raises or lowers their price. A `fhirpath`
argument runs on every item of its list before any paging: it costs FHIRPATH_COST per item the
list can hold (its `_count` does not lower that). Introspection is not counted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    GraphQLError,
    Lexer,
    OperationDefinitionNode,
    Source,
    TokenKind,
)

from api.graphql.selection import Field, Fold, Walker
from store.fhir.outcome import ISSUE_TYPE, QUERY_REJECTED, Issue, outcome


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 10_000
    max_depth: int = 15
    max_aliases: int = 30
    max_cost: int = 2_000_000
    max_length: int = 100_000  # characters of query text, refused before parsing
    max_series: int = 1_000  # per study, as the store enforces
    max_instances: int = 50_000  # per study, as the store enforces
    max_list: int = 1_000  # what ImagingStudyList returns without _count, at most
    whole_study: int = 1  # the cost of one fhirJson: every element of the largest study
    introspection: bool = True


# Expected list sizes when a query gives no _count (series and instance: see _Walk.field).
DEFAULT_SIZES = {
    "ImagingStudyList": 20,
    "ImagingStudyConnection": 20,
    "ImagingStudyHistory": 100,
    "ImagingStudyImport": 1,
}
PAGED = {"ImagingStudyConnection"}  # a connection's size applies to its edges
# One FHIRPath evaluation, in selected fields: fhirpathpy takes about 50 us an item, as long
# as completing some fifty fields does.
FHIRPATH_COST = 50
# An instance an expression on its series walks through: a tenth of a second per 50,000.
FHIRPATH_WALK_COST = 10


class _Measure(NamedTuple):
    depth: int
    aliases: int
    cost: int  # for one object of the selection's type


_NOTHING = _Measure(0, 0, 0)
# The sizes a selection is priced in: the enclosing series list's, and the enclosing
# connection's page size (which its edges take).
_Context = tuple[int, int]


def rejected(what: str, limit: int, measured: int | str, advice: str = "") -> GraphQLError:
    """The QUERY_REJECTED error of one limit; `advice` says what would make the query fit."""
    message = f"query rejected: {what} {measured} exceeds the limit of {limit}"
    if advice:
        message += f"; {advice}"
    resource = outcome([Issue(None, message, ISSUE_TYPE[QUERY_REJECTED])])
    return GraphQLError(
        message,
        extensions={
            "code": QUERY_REJECTED,
            "resource": resource,
            "limit": limit,
            "measured": measured,
        },
    )


class _Walk:
    """Depth, aliases and cost of one operation in one pass that is linear in the document
    (the selection walker's `Fold`: a fragment is measured once per context, the sizes it is
    priced in, and its measure reused at every spread)."""

    def __init__(self, limits: Limits, walker: Walker) -> None:
        self.limits = limits
        self.measure = Fold(walker, self.field, _combine)
        # What a refusal's advice names: lists priced at their most for want of a `_count`,
        # lists whose `_count` could be lower, and whether whole studies (fhirJson) are asked.
        self.unpaged: set[str] = set()
        self.counted: set[str] = set()
        self.whole = False
        self.fhirpaths: set[str] = set()  # lists filtered by a FHIRPath on every item

    def field(self, field: Field, context: _Context) -> _Measure:
        """A field's own cost (1, or what fhirJson returns) plus its children's, times the
        number of objects they are resolved on."""
        name = field.name
        if name.startswith("__"):
            return _NOTHING  # introspection is not counted
        series, page = context
        count = self.count(field)
        if name in PAGED:  # the connection is one object; its size applies to its edges
            size, inner = 1, (series, count or DEFAULT_SIZES[name])
            most = inner[1]
        elif name == "edges":
            size, inner = page, context
            most = size
        elif name == "series":
            most = self.limits.max_series
            size = min(count or most, most)
            inner = (size, page)
        elif name == "instance":
            # A study holds at most max_instances however they are spread over its series.
            most = -(-self.limits.max_instances // series)
            size = min(count or self.limits.max_instances, most)
            inner = context
        elif name == "ImagingStudyList" and count is None:
            # Without _count a list returns every match, up to the list cap.
            size = most = self.limits.max_list
            inner = context
            self.unpaged.add(name)
        elif name in DEFAULT_SIZES:
            size = most = count or DEFAULT_SIZES[name]
            inner = context
        else:  # a single element, or a repeating one: see the module's docstring
            size = most = 1
            inner = context
        own = self.limits.whole_study if name == "fhirJson" else 1
        if "fhirpath" in field.arguments:  # given (a variable counts, even if null)
            own += FHIRPATH_COST * most
            # On a series, an expression may walk the series' instances too: all the
            # instances a study may hold, unless it names none.
            reaches = field.arguments["fhirpath"]
            reaches = reaches if isinstance(reaches, str) else None
            if name == "series" and (
                reaches is None or "instance" in reaches or "children" in reaches
            ):
                own += FHIRPATH_WALK_COST * self.limits.max_instances
            self.fhirpaths.add(name)
        self.whole = self.whole or name == "fhirJson"
        if name in ("series", "instance") and count is None:
            self.unpaged.add(name)
        elif (
            ((count or 0) > 1 and name in (*DEFAULT_SIZES, "series", "instance"))
            or (count is None and name in DEFAULT_SIZES)
        ) and name not in self.unpaged:
            self.counted.add(name)
        child = self.measure(field.selection_set, inner)
        return _Measure(
            1 + child.depth, (field.alias is not None) + child.aliases, own + size * child.cost
        )

    @staticmethod
    def count(field: Field) -> int | None:
        """The `_count` argument, from the query, its variable or the variable's default."""
        raw = field.arguments.get("_count")
        try:
            return max(int(raw), 1) if raw is not None else None
        except (TypeError, ValueError):
            return 1  # a wrong type is refused by validation anyway

    def advice(self) -> str:
        """What would bring the cost down, in the order a viewer would try it."""
        steps = []
        if "instance" in self.unpaged:
            steps.append(
                "page the instances: instance(_count: 100, _offset: 0), then the next _offset"
            )
        if "series" in self.unpaged:
            steps.append("give series a _count")
        if "ImagingStudyList" in self.unpaged:
            steps.append(
                "give ImagingStudyList a _count (without one it is priced at the "
                "list cap, what it may return)"
            )
        if self.whole:
            steps.append("ask fhirJson of fewer studies at once")
        if self.fhirpaths:
            steps.append(
                f"use a field filter instead of fhirpath on "
                f"{', '.join(sorted(self.fhirpaths))} (a FHIRPath runs on every item, "
                "whatever the _count), or give the lists around it a _count"
            )
        if self.counted:
            steps.append(f"lower the _count of {', '.join(sorted(self.counted))}")
        return "to fit, " + "; ".join(steps) if steps else "to fit, select fewer fields"


def _combine(measures: list[_Measure]) -> _Measure:
    """The measure of a selection from its parts': the deepest depth, the sum of the rest."""
    if not measures:
        return _NOTHING
    depths, aliases, costs = zip(*measures, strict=True)
    return _Measure(max(depths), sum(aliases), sum(costs))


_ADVICE = {
    "depth": "to fit, nest the selection less deeply",
    "aliases": "to fit, send fewer aliases in one request (or several requests)",
}


def limit_errors(
    limits: Limits, document: DocumentNode, variables: dict[str, Any]
) -> list[GraphQLError]:
    """Depth, aliases and cost of each operation in `document`, over the limits."""
    errors = []
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        walk = _Walk(limits, Walker.of_document(document, variables, operation))
        measure = walk.measure(operation.selection_set, (1, 1))
        # The fold holds `walk.field`, a method of `walk`: a reference cycle that would keep
        # the variables alive until the garbage collector's next pass.
        del walk.measure
        checks = [
            ("depth", limits.max_depth, measure.depth),
            ("aliases", limits.max_aliases, measure.aliases),
            ("cost", limits.max_cost, measure.cost),
        ]
        errors += [
            rejected(what, limit, measured, walk.advice() if what == "cost" else _ADVICE[what])
            for what, limit, measured in checks
            if measured > limit
        ]
    return errors


# A query's variables: search values (at most 100 per argument, 300 per field, 30 aliases) and
# a few scalars, with room to spare.
QUERY_LIST, QUERY_VALUES = 1_000, 20_000


def variable_errors(
    variables: Any, most_list: int = QUERY_LIST, most_values: int = QUERY_VALUES
) -> list[GraphQLError]:
    """Refuses, before GraphQL coerces them on the event loop (seconds for a million values),
    a query's variables holding a longer list or more values in all than a query can use: its
    lists are search values, capped far lower. (A mutation's variables, which carry studies,
    are coerced in a worker thread.) Stops at the first list or value over the limit."""
    total, stack = 0, [variables]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            if len(value) > most_list:
                return [rejected("variable list length", most_list, len(value))]
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        total += 1
        if total > most_values:
            return [rejected("variable values", most_values, f"more than {most_values}")]
    return []


def token_rejection(source: str, error: GraphQLError, max_tokens: int) -> GraphQLError | None:
    """The QUERY_REJECTED form of a parse error of `source` when `source` is over the token
    limit (tokens and comments, as the parser counts them), else None.

    graphql-core tells its token-limit error from a syntax error only in its message text
    ("Document contains more than N tokens"), so on a parse error this counts the tokens
    itself with graphql-core's lexer, up to the limit: a document over it is refused as such
    (even when it also has a syntax error the parser met first); any other stays a syntax
    error, even one quoting those words in a string."""
    if not error.positions:
        return None
    lexer, counted = Lexer(Source(source)), 0
    try:
        while counted <= max_tokens:
            token = lexer.advance()
            if token.kind == TokenKind.EOF:
                return None
            skipped = lexer.last_token.next  # the comments the lexer stepped over
            while skipped is not None and skipped is not token:
                counted, skipped = counted + 1, skipped.next
            counted += 1
    except GraphQLError:  # a lexical error before the limit: a syntax error
        return None
    return rejected("tokens", max_tokens, f"more than {max_tokens}")
