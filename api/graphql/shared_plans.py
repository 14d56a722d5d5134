"""Plans shared across requests: writing a plan (collecting the fields, coercing the arguments,
generating the source) costs a third of a millisecond for a viewer's whole-study query, about
a twentieth of running it over 10,000 instances, and viewers send the same few documents over
and over (the document cache of api/graphql/documents.py hands out the same parsed nodes).

A plan is a function of the schema, of its selection (the AST nodes of its fields, and the
fragments they spread, in its operation) and of the values of the variables used inside that
selection (@include/@skip, arguments): the key is exactly these, so `ImagingStudy(id: $id)`
opened for another study reuses the plan, while another `_count: $n` or `@include(if: $yes)`
makes its own. Entries keep what their key names by `id()` alive, and a hit checks identity, so
an id reused by another object never finds a plan made for the old one. Bounded: least recently
used plans go first.

The same key serves what a root resolver derives from its selection alone (`derived`): the
elements the store reads and the result budget's shape of `ImagingStudy(id:)`, a third of a
millisecond of walking a whole-study selection on every request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from graphql import (
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    Undefined,
    Visitor,
    visit,
)

from api.graphql.plans import Build

_SIZE = 512  # plans kept; each is a few kilobytes of code and bound arguments
_ABSENT = object()
T = TypeVar("T")


class _Uses(Visitor):
    """Collects the variables and fragment spreads of a selection set."""

    def __init__(self) -> None:
        super().__init__()
        self.variables: set[str] = set()
        self.spreads: set[str] = set()
        self.shareable = True

    def enter_variable(self, node: Any, *_: Any) -> None:
        self.variables.add(node.name.value)

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.add(node.name.value)
        if getattr(node, "arguments", None):  # fragment arguments (experimental): not shared
            self.shareable = False


Uses = tuple[frozenset[str], tuple[tuple[str, FragmentDefinitionNode], ...]] | None


def _variables(nodes: tuple[Any, ...], fragments: dict[str, FragmentDefinitionNode]) -> Uses:
    """The names of the variables used below `nodes` and the fragments they spread (by name,
    with the definition each name had), or None when the selection cannot be shared."""
    uses = _Uses()
    for node in nodes:
        if node.selection_set is not None:
            visit(node.selection_set, uses)
    spread: dict[str, FragmentDefinitionNode] = {}
    while uses.spreads - spread.keys():
        name = min(uses.spreads - spread.keys())
        fragment = spread[name] = fragments[name]
        if fragment.variable_definitions:
            return None
        visit(fragment.selection_set, uses)
    if not uses.shareable:
        return None
    return frozenset(uses.variables), tuple(sorted(spread.items(), key=lambda i: i[0]))


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a coerced variable value, equal only for equal values of the
    same types (so True and 1, or 0.0 and -0.0, are told apart)."""
    if type(value) is list:
        return ("list", tuple(map(_frozen, value)))
    if type(value) is dict:
        return ("dict", tuple((k, _frozen(v)) for k, v in value.items()))
    if type(value) is float:
        return ("float", repr(value))
    return (type(value).__name__, value)


class SharedPlans:
    """The process's plans, keyed by schema, selection and the variables it uses."""

    def __init__(self, size: int = _SIZE) -> None:
        self.size = size
        self._plans: OrderedDict[Any, tuple[Any, Build | None]] = OrderedDict()
        self._derived: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        self._uses: OrderedDict[Any, tuple[tuple[Any, ...], Uses]] = OrderedDict()
        self._lock = threading.Lock()  # a mutation's executor may run off the event loop

    def plan(
        self,
        executor: Any,
        type_: GraphQLObjectType,
        field_details_list: Any,
        build: Callable[[], Build | None],
    ) -> Build | None:
        """The shared plan of this selection, made by `build` on a miss."""
        if any(
            d.fragment_variable_values is not None or d.defer_usage is not None
            for d in field_details_list
        ):
            return build()
        nodes = tuple(d.node for d in field_details_list)
        plan: Build | None = self._kept(
            self._plans,
            (executor.schema, executor.operation, type_, nodes),
            executor.fragment_definitions,
            executor.variable_values,
            build,
        )
        return plan

    def derived(self, info: Any, kind: object, make: Callable[[], T]) -> T:
        """What `make` derives from the selection of the field `info` (graphql-core's resolve
        info) resolves, alone: made once for every request that selects the same with the
        same variables, like a plan. `kind` tells apart what different callers derive; the
        value is shared, so it must be one nobody changes."""
        owners = (info.schema, info.operation, kind, tuple(info.field_nodes))
        kept: T = self._kept(self._derived, owners, info.fragments, info.variable_values, make)
        return kept

    def _kept(
        self,
        entries: OrderedDict[Any, tuple[Any, Any]],
        owners: tuple[Any, Any, Any, tuple[Any, ...]],
        fragments: dict[str, FragmentDefinitionNode],
        variables: Any,
        make: Callable[[], Any],
    ) -> Any:
        """The entry of `entries` for the selection of these nodes in this schema and
        operation (`owners`, with a type or kind), made by `make` on a miss."""
        nodes = owners[3]
        uses = self._variables(fragments, nodes)
        if uses is None:
            return make()
        # graphql-core's variables (their sources tell a value sent from a default), or the
        # coerced values alone, as Strawberry's executor hands them to resolvers.
        sources = getattr(variables, "sources", {})
        coerced = getattr(variables, "coerced", variables)
        values = tuple(
            (
                name,
                getattr(sources.get(name), "value", Undefined) is Undefined,
                _frozen(coerced.get(name, _ABSENT)),
            )
            for name in sorted(uses[0])
        )
        # (The operation too: a fragment's nodes may be spread by several operations.)
        key = (*map(id, owners[:3]), tuple(map(id, nodes)), values)
        with self._lock:
            found = entries.get(key)
            if found is not None and _same(found[0], owners):
                entries.move_to_end(key)
                return found[1]
        made = make()
        with self._lock:
            entries[key] = (owners, made)
            while len(entries) > self.size:
                entries.popitem(last=False)
        return made

    def _variables(
        self, fragments: dict[str, FragmentDefinitionNode], nodes: tuple[Any, ...]
    ) -> Uses:
        """`_variables` of these nodes, remembered while the document's nodes live on (its
        fragments by the same names must be the same nodes too)."""
        key = tuple(map(id, nodes))
        with self._lock:
            found = self._uses.get(key)
        if (
            found is not None
            and _same((found[0],), (nodes,))
            and (found[1] is None or all(fragments.get(name) is node for name, node in found[1][1]))
        ):
            return found[1]
        uses = _variables(nodes, fragments)
        with self._lock:
            self._uses[key] = (nodes, uses)
            while len(self._uses) > self.size:
                self._uses.popitem(last=False)
        return uses


def _same(kept: tuple[Any, ...], owners: tuple[Any, ...]) -> bool:
    """Whether the objects an entry was made for are these very objects."""
    return all(
        all(a is b for a, b in zip(x, y, strict=True)) if type(x) is tuple else x is y
        for x, y in zip(kept, owners, strict=True)
    )
