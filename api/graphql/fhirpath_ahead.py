"""FHIRPath expressions compiled before an operation runs, off the event loop.

Parsing a FHIRPath expression costs with its text (fhirpathpy's ANTLR parser, about 0.3 ms per
character), and the resolvers that use one (a search's `fhirpath`, a repeating element's, the
`path` of @slice) run on the event loop: a few kilobytes of brackets sent by many callers at
once would hold every other request. So before execution, every such expression the operation
holds (as a literal or through a variable) is compiled on a worker thread of the FHIRPath pool
(`fhirpath.precompile`); the resolvers then find it in the compiled cache, refusals included.

Finding them walks the whole document (a quarter of a millisecond for a whole-study query, on
every request), so where they stand in a document is remembered per document: the document
cache (api/graphql/documents.py) hands every request with the same text the same nodes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from graphql import ArgumentNode, DocumentNode, Node, StringValueNode, VariableNode
from strawberry.extensions import SchemaExtension

from api.graphql.fhirpath import MAX_LENGTH
from api.graphql.fhirpath_rules import precompile

# The arguments that hold an expression: `fhirpath` of searches and repeating elements, and
# `path` of the @slice directive.
_NAMES = frozenset({"fhirpath", "path"})
# Documents whose expression arguments are remembered (by id, holding the document, so an id
# reused by another document never finds them); least recently used go first.
_SIZE = 256
_FOUND: OrderedDict[int, tuple[DocumentNode, tuple[tuple[bool, str], ...]]] = OrderedDict()


def expressions(document: Node, variables: Mapping[str, Any]) -> Iterator[str]:
    """The texts of the expression arguments in `document` (or any node), literal or from
    `variables`."""
    for literal, text in _found(document):
        if literal:
            yield text
        else:
            given = variables.get(text)
            if isinstance(given, str):
                yield given


def _found(document: Node) -> tuple[tuple[bool, str], ...]:
    """`_arguments` of `document`, remembered when it is a whole document."""
    if not isinstance(document, DocumentNode):
        return tuple(_arguments(document))
    kept = _FOUND.get(id(document))
    if kept is not None and kept[0] is document:
        _FOUND.move_to_end(id(document))
        return kept[1]
    found = tuple(_arguments(document))
    _FOUND[id(document)] = (document, found)
    while len(_FOUND) > _SIZE:
        _FOUND.popitem(last=False)
    return found


def _arguments(document: Node) -> Iterator[tuple[bool, str]]:
    """The expression arguments in `document`, in the order `expressions` gives them: (True,
    the text) for a literal, (False, the variable's name) for a variable."""
    stack: list[Node] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, ArgumentNode) and node.name.value in _NAMES:
            value = node.value
            if isinstance(value, StringValueNode):
                yield True, value.value
            elif isinstance(value, VariableNode):
                yield False, value.name.value
            continue
        for key in node.keys:
            child = getattr(node, key, None)
            if isinstance(child, Node):
                stack.append(child)
            elif isinstance(child, tuple | list):
                stack.extend(c for c in child if isinstance(c, Node))


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
