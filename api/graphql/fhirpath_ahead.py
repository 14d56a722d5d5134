"""FHIRPath expressions compiled before an operation runs, off the event loop.

Parsing a FHIRPath expression costs with its text (fhirpathpy's ANTLR parser, about 0.3 ms per
character), and the resolvers that use one (a search's `fhirpath`, a repeating element's, the
`path` of @slice) run on the event loop: a few kilobytes of brackets sent by many callers at
once would hold every other request. So before execution, every such expression the operation
holds (as a literal or through a variable) is compiled on a worker thread of the FHIRPath pool
(`fhirpath.precompile`); the resolvers then find it in the compiled cache, refusals included."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from graphql import ArgumentNode, Node, StringValueNode, VariableNode
from strawberry.extensions import SchemaExtension

from api.graphql.fhirpath import MAX_LENGTH
from api.graphql.fhirpath_rules import precompile

# The arguments that hold an expression: `fhirpath` of searches and repeating elements, and
# `path` of the @slice directive.
_NAMES = frozenset({"fhirpath", "path"})


def expressions(document: Node, variables: Mapping[str, Any]) -> Iterator[str]:
    """The texts of the expression arguments in `document` (or any node), literal or from
    `variables`. A document's arguments are found once (`_arguments`): walking it on every
    request was a twentieth of the fixed cost of a small query."""
    literals, names = _arguments(document)
    yield from literals
    for name in names:
        given = variables.get(name)
        if isinstance(given, str):
            yield given


# id(document) -> its literal expressions and the variables that give the others. Keyed by
# identity (a node's own hash walks it), each entry removed when its document is freed, so an
# id is never met again while its entry is kept: the document cache's documents stay here as
# long as they stay there.
_FOUND: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _arguments(document: Node) -> tuple[tuple[str, ...], tuple[str, ...]]:
    key = id(document)
    found = _FOUND.get(key)
    if found is None:
        found = _FOUND[key] = _walk(document)
        weakref.finalize(document, _FOUND.pop, key, None)
    return found


def _walk(document: Node) -> tuple[tuple[str, ...], tuple[str, ...]]:
    literals: list[str] = []
    names: list[str] = []
    stack: list[Node] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, ArgumentNode) and node.name.value in _NAMES:
            value = node.value
            if isinstance(value, StringValueNode):
                literals.append(value.value)
            elif isinstance(value, VariableNode):
                names.append(value.name.value)
            continue
        for key in node.keys:
            child = getattr(node, key, None)
            if isinstance(child, Node):
                stack.append(child)
            elif isinstance(child, tuple | list):
                stack.extend(c for c in child if isinstance(c, Node))
    return tuple(literals), tuple(names)


class FhirPathAhead(SchemaExtension):
    """Compiles the operation's FHIRPath expressions on the FHIRPath pool before it runs."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            # The search's own cap is a setting; the repeating elements' and @slice's, MAX_LENGTH.
            settings = getattr(context.context, "settings", None)
            longest = max(MAX_LENGTH, getattr(settings, "search_max_value_length", 0))
            await precompile(expressions(document, context.variables or {}), longest)
        yield
