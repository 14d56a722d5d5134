"""The one walker over GraphQL selections (graphql-core's AST), for every reader of what a
query selects: the projection (what the store reads), the cost limits, the result budget, the
audit record (its root fields), the resolvers and the reshaping directives.

It reads a selection as graphql-core's executor collects it: fragment spreads and inline
fragments are expanded where their type condition applies, and a field, fragment or spread
under `@skip(if: true)` or `@include(if: false)` is left out, the condition read from the
variables (their defaults included). Each of those readers used to walk selections its own way
and they disagreed (a field reached only through a fragment read as null; a merged field's
second selection was not read; a skipped field was priced and a defaulted `@include` lost).

Two ways to walk:
- `Selection.fields()`: the fields of one response key, collected as the executor does (each
  fragment once per collection, the selection sets of merged fields together), each a `Field`
  with its name, alias, argument values, directives, nested selection and type condition;
- `Fold`: a value summed over a selection set in one pass that is linear in the document, each
  named fragment folded once per context and reused at every spread (the query limits).

A type condition is checked against the type the selection is resolved on when the caller
knows it (`on`) and the schema is at hand; otherwise every fragment counts, which on an object
type is exact (validation lets only conditions that contain it through) and elsewhere errs on
the side of reading and pricing more."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    ValueNode,
    VariableNode,
    is_abstract_type,
)
from graphql.utilities import value_from_ast_untyped

C = TypeVar("C", bound=Hashable)
M = TypeVar("M")


def operation_of(
    document: DocumentNode | None, name: str | None = None
) -> OperationDefinitionNode | None:
    """The operation of `document` that runs: the one named `name`, or the first when no name
    is given (as Strawberry runs it; a document of several needs one: operation_choice.py)."""
    for definition in document.definitions if document else ():
        if isinstance(definition, OperationDefinitionNode) and (
            name is None or (definition.name is not None and definition.name.value == name)
        ):
            return definition
    return None


def root_fields(
    document: DocumentNode | None,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """(operation type, root field names) of the operation of `document` that runs, those
    selected through fragments included and those @skip/@include leave out not: the fields
    that ran, for the audit record and the metrics (("unknown", []) without an operation)."""
    operation = operation_of(document, operation_name)
    if document is None or operation is None:
        return "unknown", []
    walker = Walker.of_document(document, variables, operation)
    names = [f.name for f in walker.fields([operation.selection_set])]
    return operation.operation.value, names


def operation_fields(context: Any) -> tuple[str, list[str]]:
    """`root_fields` of the operation of a Strawberry execution context, read once per
    operation: the audit record and the metrics both ask as it ends."""
    document, kept = context.graphql_document, context.__dict__.get("_root_fields")
    if kept is not None and kept[0] is document:
        return kept[1]  # type: ignore[no-any-return]
    # Strawberry fills a missing operationName in from the first operation; a document of
    # several without one runs none of them (operation_choice.py refuses it).
    chosen = getattr(context, "_provided_operation_name", None)
    several = document is not None and (
        sum(isinstance(d, OperationDefinitionNode) for d in document.definitions) > 1
    )
    if chosen is None and several:
        found: tuple[str, list[str]] = ("unknown", [])
    else:
        found = root_fields(document, context.operation_name, context.variables)
    context.__dict__["_root_fields"] = (document, found)
    return found


def unparsed(context: Any) -> None:
    """Marks the document of a Strawberry execution context as the stand-in for a text that
    was refused before or while parsing: no operation type, no root fields (the audit must
    not record the stand-in's `__typename` as what the caller asked for)."""
    context.__dict__["_root_fields"] = (context.graphql_document, ("unknown", []))


class Walker:
    """The fragments and variables of one operation, and the rules of a selection over them."""

    def __init__(
        self,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None = None,
        operation: OperationDefinitionNode | None = None,
        schema: GraphQLSchema | None = None,
    ) -> None:
        self.fragments = fragments
        self.schema = schema
        # `query($c: Int = 1000)` with no $c sent runs with 1000 (coerced variables, as the
        # resolvers get them, have their defaults already).
        defaults = {
            d.variable.name.value: value_from_ast_untyped(d.default_value)
            for d in (operation.variable_definitions or () if operation else ())
            if d.default_value is not None
        }
        self.variables: dict[str, Any] = {**defaults, **(variables or {})}

    @classmethod
    def of_document(
        cls,
        document: DocumentNode,
        variables: Mapping[str, Any] | None = None,
        operation: OperationDefinitionNode | None = None,
        schema: GraphQLSchema | None = None,
    ) -> Walker:
        """The walker of `operation` in `document`, with the variables as sent."""
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return cls(fragments, variables, operation, schema)

    @classmethod
    def of_info(cls, info: strawberry.Info[Any, Any]) -> Walker:
        """The walker of the operation a resolver runs in, with its coerced variables."""
        # Strawberry's Info gives the selection only as its own `selected_fields`, which
        # knows no @skip/@include; the fragments are on graphql-core's info that it wraps.
        raw = info._raw_info
        return cls(raw.fragments, info.variable_values, None, raw.schema)

    def included(self, node: Any) -> bool:
        """Whether @skip/@include let `node` run. An `if` that is no boolean (a variable not
        sent) makes the operation fail before it runs: the node counts as included."""
        for directive in node.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            flag = next(
                (self.value(a.value) for a in directive.arguments or () if a.name.value == "if"),
                None,
            )
            if isinstance(flag, bool) and flag == (name == "skip"):
                return False
        return True

    def value(self, node: ValueNode) -> Any:
        """An argument's value: a literal as Python data, a variable as its value (None when
        it was not sent and has no default)."""
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        value = value_from_ast_untyped(node, self.variables)
        return None if value is Undefined else value

    def applies(self, condition: str | None, on: str | None) -> bool:
        """Whether a fragment on `condition` applies to an object of type `on` (None: any)."""
        if condition is None or on is None or condition == on:
            return True
        if self.schema is None:
            return False
        abstract = self.schema.get_type(condition)
        if abstract is None or not is_abstract_type(abstract):
            return False
        return any(t.name == on for t in self.schema.get_possible_types(abstract))

    def parts(
        self,
        selection_set: SelectionSetNode | None,
        on: str | None = None,
        condition: str | None = None,
    ) -> Iterator[Field | Spread]:
        """The included fields of a selection set with its inline fragments expanded in
        place, and its named spreads as `Spread`s (of known fragments that apply), in order;
        `condition`: the type condition the selection set is under, if any."""
        for node in selection_set.selections if selection_set else ():
            if node.directives and not self.included(node):
                continue
            if isinstance(node, FieldNode):
                yield Field(self, node, condition)
            elif isinstance(node, InlineFragmentNode):
                inner = node.type_condition.name.value if node.type_condition else condition
                if self.applies(inner, on):
                    yield from self.parts(node.selection_set, on, inner)
            elif isinstance(node, FragmentSpreadNode):
                fragment = self.fragments.get(node.name.value)
                if fragment is not None and self.applies(fragment.type_condition.name.value, on):
                    yield Spread(node.name.value, fragment)

    def fields(
        self, selection_sets: Iterable[SelectionSetNode | None], on: str | None = None
    ) -> list[Field]:
        """Every included field of the selection sets (those of one response key), fragments
        expanded, as the executor collects them: a named fragment once, whatever the spreads
        of it (so a fragment inside itself ends too)."""
        found: list[Field] = []
        visited: set[str] = set()
        for selection_set in selection_sets:
            if selection_set is not None:
                self._collect(selection_set, on, None, found, visited)
        return found

    def _collect(
        self,
        selection_set: SelectionSetNode,
        on: str | None,
        condition: str | None,
        found: list[Field],
        visited: set[str],
    ) -> None:
        # A method, not a closure calling itself: that closure was a reference cycle holding
        # the walker, and so the request's variables (a whole import Bundle), until the
        # garbage collector ran, which then freed them all at once on the event loop.
        for part in self.parts(selection_set, on, condition):
            if isinstance(part, Field):
                found.append(part)
            elif part.name not in visited:
                visited.add(part.name)
                self._collect(part.fragment.selection_set, on, part.condition, found, visited)


class Spread:
    """A named fragment spread that applies: its name and its definition."""

    def __init__(self, name: str, fragment: FragmentDefinitionNode) -> None:
        self.name = name
        self.fragment = fragment

    @property
    def condition(self) -> str:
        """The type the fragment is on."""
        return self.fragment.type_condition.name.value


class Field:
    """One selected field: its name, alias, arguments (variables substituted), directives,
    nested selection, and the type condition of the fragment it was selected through."""

    __slots__ = (
        "alias",
        "arguments",
        "condition",
        "directives",
        "key",
        "name",
        "node",
        "selection_set",
        "walker",
    )

    def __init__(self, walker: Walker, node: FieldNode, condition: str | None = None) -> None:
        self.walker = walker
        self.node = node
        self.name = node.name.value
        self.alias = node.alias.value if node.alias else None
        self.key = self.alias or self.name  # its name in the response
        self.condition = condition
        self.selection_set = node.selection_set
        value = walker.value
        # Every argument given, by name: its value, a variable's value, or None; and the
        # directives by name with their arguments' values (most fields have neither).
        self.arguments: dict[str, Any] = (
            {a.name.value: value(a.value) for a in node.arguments} if node.arguments else {}
        )
        self.directives: dict[str, dict[str, Any]] = (
            {
                d.name.value: {a.name.value: value(a.value) for a in d.arguments or ()}
                for d in node.directives
            }
            if node.directives
            else {}
        )

    def below(self, on: str | None = None) -> Selection:
        """This field's own selection (empty for a leaf)."""
        return Selection(self.walker, (self.selection_set,), on)


class Selection:
    """What one response key selects: the selection sets of its field nodes (graphql-core
    merges fields of one key), on objects of type `on` when known."""

    def __init__(
        self,
        walker: Walker,
        selection_sets: tuple[SelectionSetNode | None, ...],
        on: str | None = None,
    ) -> None:
        self.walker = walker
        self.selection_sets = selection_sets
        self.on = on
        self._fields: tuple[list[Field], list[Field]] | None = None

    @classmethod
    def of(cls, info: strawberry.Info[Any, Any], on: str | None = None) -> Selection:
        """The selection of the field a resolver resolves: every node of it (graphql-core
        merges the fields of one response key), on objects of type `on` when known."""
        nodes = info._raw_info.field_nodes
        return cls(Walker.of_info(info), tuple(n.selection_set for n in nodes), on)

    def fields(self, typename: bool = False) -> list[Field]:
        """The fields selected, in order; `__typename` only when asked (it reads no data)."""
        if self._fields is None:  # collected once, when first asked (a leaf has none)
            sets = self.selection_sets
            every = self.walker.fields(sets, self.on) if any(sets) else []
            self._fields = (every, [f for f in every if f.name != "__typename"])
        return self._fields[0] if typename else self._fields[1]

    def names(self) -> set[str]:
        """The names of the fields selected (not their aliases), but `__typename`."""
        return {f.name for f in self.fields()}

    def child(self, name: str, on: str | None = None) -> Selection | None:
        """The merged selection of the fields named `name`, or None when none is selected."""
        found = tuple(f.selection_set for f in self.fields() if f.name == name)
        return Selection(self.walker, found, on) if found else None


class Fold(Generic[C, M]):
    """A value summed over a selection set in one pass that is linear in the document:
    `field` gives a field's value (folding its own selection through this fold), `combine`
    the value of a selection set from those of its fields and spreads (of none: an empty
    one), inline fragments are folded in place, and a named fragment once per context, its
    value reused at every spread, so fragments spreading fragments cannot multiply the work.
    Every spread is counted (an upper bound of what the executor collects); a fragment inside
    itself (a cycle, which validation refuses) counts as an empty selection."""

    def __init__(
        self,
        walker: Walker,
        field: Callable[[Field, C], M],
        combine: Callable[[list[M]], M],
    ) -> None:
        self.walker = walker
        self.field = field
        self.combine = combine
        self.memo: dict[tuple[str, C], M] = {}
        self.open: set[str] = set()  # fragments being folded

    def __call__(self, selection_set: SelectionSetNode | None, context: C) -> M:
        if selection_set is None:  # a leaf
            return self.combine([])
        field, spread = self.field, self.spread
        return self.combine(
            [
                field(part, context) if isinstance(part, Field) else spread(part, context)
                for part in self.walker.parts(selection_set)
            ]
        )

    def spread(self, spread: Spread, context: C) -> M:
        key = (spread.name, context)
        if key not in self.memo:
            if spread.name in self.open:
                return self.combine([])
            self.open.add(spread.name)
            self.memo[key] = self(spread.fragment.selection_set, context)
            self.open.discard(spread.name)
        return self.memo[key]
