"""The data re-organisation directives of HL7's "Using GraphQL with FHIR" page: `@flatten`,
`@first`, `@singleton` and `@slice(path:)`, with the rules of HAPI's GraphQLEngine (the
reference implementation):

- `@flatten`: the field is not in the output; its children are added to the parent in its
  place. Under a repeating element (without `@first`) every child becomes a list, values of
  all items collated; a collated name must always have the same type.
- `@first`: only the first item of the list (an object, not a list, unless a flattened parent
  makes it a list).
- `@singleton`: the values collated under the name are one value, not a list; more than one
  is an error.
- `@slice(path:)`: each item's children get the suffix `.` + the path's value on the item
  (`$index`: its position); suffixes accumulate when nested. Not with `@first`.

They change the response's shape, so the response no longer follows the schema's types: the
query runs as usual (the compiled engine or graphql-core alike, with every field, argument and
error as without the directives), then `Reshape` rebuilds `data` from the executed selection.
A flattened child with no value (null, an empty list) adds nothing, as in HAPI. A slice path
is evaluated on the item as executed: the elements the path names are added to the selection
under hidden aliases (`_slice_<name>`) so that the store loads them, and left out of the
output."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DirectiveLocation,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLArgument,
    GraphQLDirective,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    InlineFragmentNode,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    get_named_type,
    get_nullable_type,
)
from strawberry.extensions import SchemaExtension

from api.graphql.fhirpath import run_path
from api.graphql.fhirpath_rules import FhirPathError
from api.graphql.selection import Walker, operation_of
from store.fhir.outcome import BAD_USER_INPUT, fail

NAMES = ("flatten", "first", "singleton", "slice")
DIRECTIVES = (
    GraphQLDirective(
        "flatten",
        [DirectiveLocation.FIELD],
        description=(
            "FHIR GraphQL: leave this field out and add its children to the parent in its place "
            "(as lists under a repeating element). The response no longer follows the schema."
        ),
    ),
    GraphQLDirective(
        "first",
        [DirectiveLocation.FIELD],
        description=("FHIR GraphQL: only the first item of this list, as an object."),
    ),
    GraphQLDirective(
        "singleton",
        [DirectiveLocation.FIELD],
        description=(
            "FHIR GraphQL: the values collated under this name (by a flattened parent) are one "
            "value, not a list; more than one is an error."
        ),
    ),
    GraphQLDirective(
        "slice",
        [DirectiveLocation.FIELD],
        args={
            "path": GraphQLArgument(
                GraphQLString,
                description="A FHIRPath on each item, or `$index`: its value is "
                "appended to the names of the item's children, after a dot.",
            )
        },
        description=("FHIR GraphQL: split a list into named properties, one suffix per item."),
    ),
)
HIDDEN = "_slice_"
_IDENTIFIER = re.compile(r"'(?:[^'\\]|\\.)*'|[$%]?[A-Za-z_][A-Za-z0-9_]*")


def declare(schema: GraphQLSchema) -> None:
    """Adds the four directives to the schema, so that validation accepts them (any other
    unknown directive stays a validation error)."""
    schema.directives = (*schema.directives, *DIRECTIVES)


def _error(where: str, message: str) -> GraphQLError:
    return GraphQLError(f"{where}: {message}", original_error=fail(BAD_USER_INPUT, where, message))


class ReshapeError(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.error = _error(where, message)


def _directives(nodes: list[FieldNode]) -> dict[str, DirectiveNode]:
    return {
        d.name.value: d for node in nodes for d in node.directives or () if d.name.value in NAMES
    }


def uses_reshaping(document: DocumentNode) -> bool:
    """Whether any field of the document carries one of the four directives."""
    stack: list[Any] = list(document.definitions)
    while stack:
        node = stack.pop()
        if isinstance(node, FieldNode) and any(
            d.name.value in NAMES for d in node.directives or ()
        ):
            return True
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            stack.extend(selection_set.selections)
    return False


@dataclass
class _Slot:
    """One output name: its values, whether it is a list, and the type collated under it."""

    values: list[Any] = field(default_factory=list)
    many: bool = False
    singleton: bool = False
    type_name: str = ""


class _Target:
    def __init__(self) -> None:
        self.slots: dict[str, _Slot | _Raw] = {}

    def add(self, name: str, many: bool, singleton: bool, type_name: str) -> _Slot:
        found = self.slots.get(name)
        if isinstance(found, _Raw):  # a plain field of the same name: its values collate
            raw = found.value if isinstance(found.value, list) else [found.value]
            found = _Slot(
                [v for v in raw if v is not None],
                isinstance(found.value, list),
                False,
                found.type_name,
            )
            self.slots[name] = found
        if found is None:
            slot = _Slot(many=many and not singleton, singleton=singleton, type_name=type_name)
            self.slots[name] = slot
            return slot
        if found.type_name != type_name:
            raise ReshapeError(
                name,
                f"@flatten collates values of types {found.type_name} "
                f"and {type_name} under one name; they must have the same type",
            )
        if found.singleton:
            raise ReshapeError(name, "more than one value under a name marked @singleton")
        found.many = True
        return found

    def output(self) -> dict[str, Any]:
        result = {}
        for name, slot in self.slots.items():
            if isinstance(slot, _Raw):
                result[name] = slot.value
                continue
            values = [v.output() if isinstance(v, _Target) else v for v in slot.values]
            if slot.many:
                result[name] = values
            elif len(values) > 1:
                raise ReshapeError(
                    name,
                    f"{len(values)} values under a name that is not a list"
                    + (" (@singleton)" if slot.singleton else ""),
                )
            else:
                result[name] = values[0] if values else None
        return result


@dataclass
class _Raw:
    """A field without directives outside any flattening: its value as executed."""

    value: Any
    type_name: str = ""


class Reshaper:
    """Rebuilds executed data by the directives of the selection it was executed from."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: dict[str, Any],
        operation: OperationDefinitionNode | None = None,
    ) -> None:
        # The selection as the executor collected it (its variables' defaults included).
        self.walker = Walker.of_document(document, variables, operation, schema)

    def grouped(
        self, selection_sets: list[SelectionSetNode | None], type_name: str
    ) -> dict[str, list[FieldNode]]:
        """The fields selected on an object of `type_name`, by response key, in order."""
        groups: dict[str, list[FieldNode]] = {}
        for selected in self.walker.fields(selection_sets, type_name):
            groups.setdefault(selected.key, []).append(selected.node)
        return groups

    def run(
        self, root_type: GraphQLObjectType, operation: OperationDefinitionNode, data: dict[str, Any]
    ) -> dict[str, Any]:
        target = _Target()
        self.object(data, root_type, [operation.selection_set], target, False, "")
        return target.output()

    def object(
        self,
        data: dict[str, Any],
        type_: GraphQLObjectType,
        selection_sets: list[SelectionSetNode | None],
        target: _Target,
        inherited: bool,
        suffix: str,
        flat: bool = False,
    ) -> None:
        """Adds the fields of `data` to `target`; `flat`: into a flattened field's parent,
        where every name collates."""
        for key, nodes in self.grouped(selection_sets, type_.name).items():
            name = nodes[0].name.value
            directives = _directives(nodes)
            value = data.get(key)
            if name == "__typename":
                field_type: Any = GraphQLNonNull(GraphQLString)
            else:
                field_type = type_.fields[name].type
            if not directives and not inherited and not suffix and not flat:
                plain = self.plain(value, field_type, nodes)
                type_name = get_named_type(field_type).name
                if isinstance(target.slots.get(key), _Slot):
                    # Flattened values took this name first: this field's value collates
                    # with them, as it would have the other way round (nothing is lost).
                    slot = target.add(key, True, False, type_name)
                    slot.values.extend(
                        v for v in (plain if isinstance(plain, list) else [plain]) if v is not None
                    )
                else:
                    target.slots[key] = _Raw(plain, type_name)
                continue
            nullable = get_nullable_type(field_type)
            many = isinstance(nullable, GraphQLList)
            values = [
                v for v in (value if many and isinstance(value, list) else [value]) if v is not None
            ]
            if not values and not (inherited or suffix or flat or "flatten" in directives):
                target.slots[key] = _Raw(None)  # @first of an empty list: null, as a field
            elif values:
                self.values(
                    key,
                    nodes,
                    directives,
                    many,
                    get_named_type(field_type),
                    values,
                    target,
                    inherited,
                    suffix,
                )

    def plain(self, value: Any, type_: Any, nodes: list[FieldNode]) -> Any:
        """A value without directives of its own: as executed, its objects reshaped inside."""
        named = get_named_type(type_)
        if value is None or not isinstance(named, GraphQLObjectType):
            return value
        if isinstance(value, list):
            return [self.plain(v, get_nullable_type(type_).of_type, nodes) for v in value]
        target = _Target()
        self.object(value, named, [n.selection_set for n in nodes], target, False, "")
        return target.output()

    def values(
        self,
        key: str,
        nodes: list[FieldNode],
        directives: dict[str, DirectiveNode],
        many: bool,
        item_type: Any,
        values: list[Any],
        target: _Target,
        inherited: bool,
        suffix: str,
    ) -> None:
        flatten, first = "flatten" in directives, "first" in directives
        singleton = "singleton" in directives
        path = self._path(directives.get("slice"), key)
        if first and path is not None:
            raise ReshapeError(key, "@slice and @first cannot be used together")
        is_object = isinstance(item_type, GraphQLObjectType)
        if flatten and not is_object:
            raise ReshapeError(key, "@flatten applies to fields with a selection of their own")
        slot, collate = None, False
        if flatten:
            # Under a flattened repeating parent, flattened children stay lists (HAPI resets
            # this; the page's rule is that all the children become lists).
            collate = (many and not first) or inherited
        elif first:
            slot = target.add(key + suffix, inherited, singleton, item_type.name)
        elif path is None:
            slot = target.add(key + suffix, many or inherited, singleton, item_type.name)
        for index, value in enumerate(values):
            item_suffix = suffix  # suffixes accumulate when nesting
            if path is not None:
                item_suffix = f"{suffix}.{self._slice_key(path, index, value, key)}"
                if not flatten:
                    slot = target.add(key + suffix, many or inherited, singleton, item_type.name)
            if not is_object:
                assert slot is not None
                slot.values.append(value)
            elif slot is None:
                self.object(
                    value,
                    item_type,
                    [n.selection_set for n in nodes],
                    target,
                    collate,
                    item_suffix,
                    flat=True,
                )
            else:
                inner = _Target()
                slot.values.append(inner)
                self.object(
                    value, item_type, [n.selection_set for n in nodes], inner, False, item_suffix
                )
            if first:
                return

    @staticmethod
    def _path(directive: DirectiveNode | None, key: str) -> str | None:
        if directive is None:
            return None
        argument = next((a for a in directive.arguments or () if a.name.value == "path"), None)
        if argument is None or not isinstance(argument.value, StringValueNode):
            raise ReshapeError(key, '@slice needs a path: a FHIRPath string or "$index"')
        return argument.value.value

    @staticmethod
    def _slice_key(path: str, index: int, value: Any, key: str) -> str:
        if path == "$index":
            return str(index)
        item = value
        if isinstance(value, dict):  # the hidden elements the path reads, under their names
            item = {k[len(HIDDEN) :]: v for k, v in value.items() if k.startswith(HIDDEN)}
        try:
            result = run_path(path, item)
        except FhirPathError as refused:  # about the path itself: the caller's own text
            raise ReshapeError(
                key,
                f"the @slice path {path!r} is not a FHIRPath expression "
                f"this server evaluates: {refused}",
            ) from None
        except ValueError:
            # Not the engine's own text: it may quote the stored values it failed on.
            raise ReshapeError(
                key,
                f"the @slice path {path!r} fails on an item: check it "
                "against the elements the field selects",
            ) from None
        return "".join(str(v).lower() if isinstance(v, bool) else str(v) for v in result)


def _leaves(type_: GraphQLObjectType, depth: int) -> SelectionSetNode | None:
    """A selection of every plain field of `type_`, `depth` levels down (for slice paths)."""
    fields = []
    for name, definition in type_.fields.items():
        named = get_named_type(definition.type)
        if definition.args and any(
            isinstance(get_nullable_type(a.type), GraphQLNonNull) for a in definition.args.values()
        ):
            continue
        if isinstance(named, GraphQLObjectType):
            if depth and name not in ("extension", "modifierExtension"):
                below = _leaves(named, depth - 1)
                if below is not None:
                    fields.append(
                        FieldNode(
                            name=NameNode(value=name),
                            selection_set=below,
                            arguments=(),
                            directives=(),
                        )
                    )
        elif name != "fhirJson":
            fields.append(FieldNode(name=NameNode(value=name), arguments=(), directives=()))
    return SelectionSetNode(selections=tuple(fields)) if fields else None


def with_slice_elements(schema: GraphQLSchema, document: DocumentNode) -> DocumentNode:
    """The document with, inside each field sliced by a FHIRPath, the elements the path names
    selected under hidden aliases (a copy: the cached document stays as parsed)."""

    def visit(node: Any, type_: Any) -> Any:
        selection_set = getattr(node, "selection_set", None)
        if selection_set is None or not isinstance(type_, GraphQLObjectType):
            return node
        selections = []
        for child in selection_set.selections:
            if isinstance(child, FieldNode) and child.name.value in type_.fields:
                child = visit(child, get_named_type(type_.fields[child.name.value].type))
            elif isinstance(child, InlineFragmentNode):
                inner = (
                    type_
                    if child.type_condition is None
                    else schema.get_type(child.type_condition.name.value)
                )
                child = visit(child, inner)
            selections.append(child)
        if isinstance(node, FieldNode):
            selections += _hidden(node, type_)
        return _copy(node, selection_set=SelectionSetNode(selections=tuple(selections)))

    definitions = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            root = schema.get_root_type(definition.operation)
            definition = visit(definition, root)
        elif isinstance(definition, FragmentDefinitionNode):
            definition = visit(definition, schema.get_type(definition.type_condition.name.value))
        definitions.append(definition)
    return DocumentNode(definitions=tuple(definitions))


def _hidden(node: FieldNode, item_type: GraphQLObjectType) -> list[FieldNode]:
    directive = next((d for d in node.directives or () if d.name.value == "slice"), None)
    argument = (
        next((a for a in directive.arguments or () if a.name.value == "path"), None)
        if directive
        else None
    )
    if (
        argument is None
        or not isinstance(argument.value, StringValueNode)
        or argument.value.value == "$index"
    ):
        return []
    names = {t for t in _IDENTIFIER.findall(argument.value.value) if t in item_type.fields}
    hidden = []
    for name in sorted(names):
        named = get_named_type(item_type.fields[name].type)
        below = _leaves(named, 2) if isinstance(named, GraphQLObjectType) else None
        if isinstance(named, GraphQLObjectType) and below is None:
            continue
        hidden.append(
            FieldNode(
                alias=NameNode(value=HIDDEN + name),
                name=NameNode(value=name),
                arguments=(),
                directives=(),
                selection_set=below,
            )
        )
    return hidden


def _copy(node: Any, **changes: Any) -> Any:
    values = {key: getattr(node, key) for key in node.keys if key != "loc"}
    values.update(changes)
    return type(node)(**values)


class Reshape(SchemaExtension):
    """Runs the directives on the executed data of a query or mutation that uses them."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        active = document is not None and uses_reshaping(document)
        if active:
            assert document is not None
            context.graphql_document = with_slice_elements(context.schema._schema, document)
        yield
        if not active or document is None or context.result is None:
            return
        context.graphql_document = document
        result = context.result
        operation = operation_of(document, context.operation_name)
        if result.data is None or operation is None:
            return
        schema = context.schema._schema
        root = schema.get_root_type(operation.operation)
        assert root is not None  # the operation ran, so the schema has its root type
        try:
            # On a worker thread: reshaping a 50,000-instance study held the loop ~1 s.
            result.data = await asyncio.to_thread(
                Reshaper(schema, document, context.variables or {}, operation).run,
                root,
                operation,
                result.data,
            )
        except ReshapeError as error:
            result.data = None
            result.errors = [*(result.errors or ()), error.error]
        except GraphQLError as error:  # a limit met while reshaping (FHIRPath time)
            result.data = None
            result.errors = [*(result.errors or ()), error]
