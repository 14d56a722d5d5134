"""Query limits (OWASP GraphQL cheat sheet): tokens, depth, aliases and cost, each refused as
QUERY_REJECTED with the limit and the measured value before any store access.

Cost counts every selected field once per object it will be resolved on: a list field's
children are multiplied by its `_count` argument when given, else by a default size (the list
default, or a typical study shape for series and instances). Introspection is not counted."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from graphql.language import parse
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

QUERY_REJECTED = "QUERY_REJECTED"


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 10_000
    max_depth: int = 15
    max_aliases: int = 30
    max_cost: int = 2_000_000
    introspection: bool = True


# Expected list sizes when a query gives no _count: the list defaults, and for a study's
# series and instances the largest study the store accepts (20 x 2,500 = 50,000 instances).
DEFAULT_SIZES = {"ImagingStudyList": 20, "ImagingStudyConnection": 20,
                 "ImagingStudyHistory": 100, "series": 20, "instance": 2_500,
                 "ImagingStudyImport": 1}
PAGED = {"ImagingStudyConnection"}  # a connection's size applies to its edges


def rejected(what: str, limit: int, measured: int | str) -> GraphQLError:
    message = f"query rejected: {what} {measured} exceeds the limit of {limit}"
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "too-costly", "diagnostics": message}]}
    return GraphQLError(message, extensions={"code": QUERY_REJECTED, "resource": outcome,
                                             "limit": limit, "measured": measured})


class _Walk:
    """Depth, aliases and cost of one operation, fragments followed once per use."""

    def __init__(self, fragments: dict[str, Any], variables: dict[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables
        self.aliases = 0

    def fields(self, selection_set: SelectionSetNode | None,
               seen: frozenset[str] = frozenset()) -> Iterator[FieldNode]:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if not selection.name.value.startswith("__"):
                    yield selection
            elif isinstance(selection, InlineFragmentNode):
                yield from self.fields(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in seen:  # cycles are another rule's
                    yield from self.fields(fragment.selection_set, seen | {name})

    def depth(self, selection_set: SelectionSetNode | None) -> int:
        return max((1 + self.depth(f.selection_set) for f in self.fields(selection_set)),
                   default=0)

    def count_aliases(self, selection_set: SelectionSetNode | None) -> int:
        return sum((f.alias is not None) + self.count_aliases(f.selection_set)
                   for f in self.fields(selection_set))

    def size(self, field: FieldNode) -> int:
        for argument in field.arguments or ():
            if argument.name.value == "_count":
                value = argument.value
                if isinstance(value, VariableNode):
                    raw = self.variables.get(value.name.value)
                else:
                    raw = getattr(value, "value", None)
                try:
                    return max(int(raw), 1) if raw is not None else self._default(field)
                except (TypeError, ValueError):
                    return 1  # a wrong type is refused by validation anyway
        return self._default(field)

    @staticmethod
    def _default(field: FieldNode) -> int:
        return DEFAULT_SIZES.get(field.name.value, 1)

    def cost(self, selection_set: SelectionSetNode | None, multiplier: int = 1) -> int:
        total = 0
        for field in self.fields(selection_set):
            name = field.name.value
            size = self.size(field)
            total += multiplier
            if name in PAGED:
                total += self._connection(field, multiplier, size)
            else:
                total += self.cost(field.selection_set, multiplier * size)
        return total

    def _connection(self, field: FieldNode, multiplier: int, size: int) -> int:
        total = 0
        for child in self.fields(field.selection_set):
            per = size if child.name.value == "edges" else 1
            total += multiplier + self.cost(child.selection_set, multiplier * per)
        return total


def limit_errors(limits: Limits, document: Any, variables: dict[str, Any]) -> list[GraphQLError]:
    """Depth, aliases and cost of each operation in `document`, over the limits."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    errors = []
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        walk = _Walk(fragments, variables)
        checks = [("depth", limits.max_depth, walk.depth(operation.selection_set)),
                  ("aliases", limits.max_aliases, walk.count_aliases(operation.selection_set)),
                  ("cost", limits.max_cost, walk.cost(operation.selection_set))]
        errors += [rejected(what, limit, measured) for what, limit, measured in checks
                   if measured > limit]
    return errors


_TOKENS = re.compile(r"Document contains more than (\d+) tokens")


def token_rejection(message: str) -> GraphQLError | None:
    """The QUERY_REJECTED form of the parser's own token-limit error, if that is what it is."""
    match = _TOKENS.search(message)
    return rejected("tokens", int(match[1]), f"more than {match[1]}") if match else None


class _Cache(OrderedDict[Any, Any]):
    """A small LRU map. Keys are query texts: the same text always means the same document."""

    def __init__(self, size: int = 256) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Any, make: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class QueryLimits(SchemaExtension):
    """Parses with the token limit, validates, and refuses documents over the depth, alias and
    cost limits. Parsed documents and their (variable-independent) validation results are
    cached by query text, since a viewer sends the same few documents over and over; the
    limits, which depend on variables (a `$count`), are measured on every request."""

    def __init__(self, limits: Limits, documents: _Cache, validations: _Cache) -> None:
        self.limits = limits
        self.documents = documents
        self.validations = validations

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = self.limits.max_tokens
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            try:
                context.graphql_document = self.documents.remember(
                    context.query, lambda: parse(context.query, max_tokens=self.limits.max_tokens))
            except GraphQLError:
                pass  # Strawberry parses again and reports the error the usual way
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.query is not None:
            rules = context.validation_rules + (
                () if self.limits.introspection else (NoSchemaIntrospectionCustomRule,))
            errors = self.validations.remember(
                (context.query, rules),
                lambda: validate_document(context.schema._schema, document, rules))
            if not errors:
                errors = limit_errors(self.limits, document, context.variables or {})
            if not errors and _subscription_over_http(document, context.context):
                errors = [GraphQLError("subscriptions are served over a WebSocket "
                                       "(graphql-transport-ws) at /graphql, not over HTTP")]
            context.pre_execution_errors = list(errors)  # Strawberry then skips validating
        yield


def _subscription_over_http(document: Any, context: Any) -> bool:
    request = getattr(context, "request", None)
    over_http = getattr(request, "scope", {}).get("type") == "http"
    return over_http and any(isinstance(d, OperationDefinitionNode)
                             and d.operation.value == "subscription"
                             for d in document.definitions)


def query_limits(limits: Limits) -> Any:
    """A factory of QueryLimits extensions sharing one document cache."""
    documents, validations = _Cache(), _Cache()
    return lambda: QueryLimits(limits, documents, validations)
