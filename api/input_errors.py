"""Where an input value breaks its GraphQL input type, as structure: the path of each problem
and its rule, from which api/errors.py builds the message and the OperationOutcome's
`expression`, without reading graphql-core's message text back.

graphql-core decides that an input is invalid; its messages, though, carry the caller's value
(`found: {...}`, which can be a whole 10,000-instance batch) and "Did you mean" suggestions,
and give the path only as text. So the problems are found again here by walking the value
(a variable's, from the request) or the literal (an argument's, in the document) along its
type, collecting for each the path of names and indices and a rule that names types and
fields, never values. A literal leaf keeps its scalar's own reason (`Int cannot represent
...`), which quotes what the caller wrote in the document itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from graphql import (
    ArgumentNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    ListValueNode,
    Node,
    NullValueNode,
    ObjectValueNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    get_named_type,
    is_enum_type,
    is_input_type,
    is_required_input_field,
    type_from_ast,
)
from graphql.language import Visitor
from graphql.pyutils import Undefined
from graphql.validation import ValidationRule

from store.fhir.outcome import BAD_USER_INPUT, Issue, outcome

MAX_PROBLEMS = 20  # per input: enough to fix a request, not a list of 10,000 echoes
Path = tuple[str | int, ...]


class Problem(NamedTuple):
    """One place where an input breaks its type: `path` from the input's root, and `rule`."""

    path: Path
    rule: str


class _Reader(NamedTuple):
    """How the walk reads one kind of input: Python values or GraphQL literals."""

    is_null: Callable[[Any], bool]
    items: Callable[[Any], list[Any] | None]  # None: not a list
    fields: Callable[[Any], dict[str, Any] | None]  # None: not an object
    leaf: Callable[[Any, Any], str | None]  # the rule a leaf breaks, None when it fits


def _leaf_rule(coerce: Callable[[], Any], type_: Any, reason: bool) -> str | None:
    try:
        fits = coerce() is not Undefined
    except GraphQLError as error:
        if reason:
            return error.message  # the scalar's own reason
        fits = False
    except Exception:
        fits = False
    return None if fits else f"not a value of type '{type_}'"


def _value_leaf(value: Any, type_: Any) -> str | None:
    # Not the scalar's reason: it quotes the value, which in a variable is data (it can be a
    # whole object sent where a string belongs), not the caller's own document text.
    return _leaf_rule(lambda: type_.coerce_input_value(value), type_, reason=False)


def _literal_leaf(node: ValueNode, type_: Any) -> str | None:
    if _has_variable(node):
        return None  # its variables are checked as variables; the whole at execution
    if is_enum_type(type_) or type_.coerce_input_literal is None:
        return _leaf_rule(lambda: type_.parse_literal(node, None), type_, reason=True)
    return _leaf_rule(lambda: type_.coerce_input_literal(node), type_, reason=True)


def _has_variable(node: ValueNode) -> bool:
    if isinstance(node, VariableNode):
        return True
    if isinstance(node, ListValueNode):
        return any(_has_variable(item) for item in node.values)
    if isinstance(node, ObjectValueNode):
        return any(_has_variable(field.value) for field in node.fields)
    return False


VALUES = _Reader(
    is_null=lambda value: value is None,
    items=lambda value: list(value) if isinstance(value, list | tuple) else None,
    fields=lambda value: value if isinstance(value, dict) else None,
    leaf=_value_leaf,
)
LITERALS = _Reader(
    is_null=lambda node: isinstance(node, NullValueNode),
    items=lambda node: list(node.values) if isinstance(node, ListValueNode) else None,
    fields=lambda node: (
        {f.name.value: f.value for f in node.fields} if isinstance(node, ObjectValueNode) else None
    ),
    leaf=_literal_leaf,
)


def problems(reader: _Reader, value: Any, type_: GraphQLInputType) -> list[Problem]:
    """The first MAX_PROBLEMS problems of `value` (read by `reader`) against `type_`."""
    found: list[Problem] = []
    walk = _walk(reader, value, type_, ())
    for problem in walk:
        found.append(problem)
        if len(found) == MAX_PROBLEMS:
            if next(walk, None) is not None:  # said, not counted: the walk stops here
                found.append(
                    Problem(
                        (),
                        f"more problems than the {MAX_PROBLEMS} above (fix them, then send again)",
                    )
                )
            break
    return found


def _walk(reader: _Reader, value: Any, type_: Any, path: Path) -> Iterator[Problem]:
    if reader is LITERALS and isinstance(value, VariableNode):
        return  # a variable inside a literal: checked as a variable
    if isinstance(type_, GraphQLNonNull):
        if value is Undefined:  # a variable not given at all
            yield Problem(path, f"missing, and type '{type_}' needs a value")
            return
        if reader.is_null(value):
            yield Problem(path, f"null, where type '{type_}' needs a value")
            return
        type_ = type_.of_type
    if value is Undefined or reader.is_null(value):
        return
    if isinstance(type_, GraphQLList):
        items = reader.items(value)
        # A list type takes a single value as a list of one (GraphQL's input coercion).
        for index, item in enumerate(items) if items is not None else [(None, value)]:
            yield from _walk(reader, item, type_.of_type, path if index is None else (*path, index))
    elif isinstance(type_, GraphQLInputObjectType):
        given = reader.fields(value)
        if given is None:
            yield Problem(path, f"not an object, as type '{type_}' needs")
            return
        for name, field in type_.fields.items():
            if name in given:
                yield from _walk(reader, given[name], field.type, (*path, name))
            elif is_required_input_field(field):
                yield Problem((*path, name), f"missing, and type '{field.type}' needs a value")
        for name in given:
            if name not in type_.fields:
                yield Problem((*path, name), f"not a field of type '{type_}'")
    else:
        rule = reader.leaf(value, type_)
        if rule is not None:
            yield Problem(path, rule)


def expression(root: str, path: Path) -> str:
    """`root` and `path` as a FHIRPath-like string: `ImagingStudy.series[0].uid`."""
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def root_of(type_: GraphQLInputType, name: str) -> str:
    """Where an input's paths start: a whole study is named as FHIR names it (ImagingStudy);
    any other input by its own name (`$instances`, `_count`)."""
    return "ImagingStudy" if get_named_type(type_).name == "ImagingStudyInput" else name


def input_error(
    subject: str, name: str, root: str, problem: Problem, nodes: Any = None
) -> GraphQLError:
    """One problem of input `name` as a GraphQL error in contract form (BAD_USER_INPUT, its
    OperationOutcome naming the element); `subject` says what the input is to the caller."""
    where = expression(root, problem.path)
    at = "" if where == name else f" at {where}"
    message = f"{subject} has an invalid value{at}: {problem.rule}."
    return GraphQLError(
        message,
        nodes=nodes,
        extensions={
            "code": BAD_USER_INPUT,
            "resource": outcome([Issue(where, message, "invalid")]),
        },
    )


def variable_errors(
    schema: Any, definition: VariableDefinitionNode, value: Any
) -> list[GraphQLError]:
    """The errors of a variable whose value graphql-core refused, each built from structure;
    none when this walk finds no problem graphql-core found (the caller keeps its error)."""
    type_ = type_from_ast(schema, definition.type)
    if type_ is None or not is_input_type(type_):
        return []
    name = f"${definition.variable.name.value}"
    return [
        input_error(f"Variable '{name}'", name, root_of(type_, name), problem, definition)
        for problem in problems(VALUES, value, type_)
    ]


class InputValuesRule(ValidationRule):
    """graphql-core's ValuesOfCorrectTypeRule, with errors built from structure: each literal
    argument (and variable default) is walked along its type, and each problem becomes one
    error in contract form naming its element."""

    def enter_argument(self, node: ArgumentNode, *_: Any) -> Any:
        argument = self.context.get_argument()
        if argument is not None:
            name = node.name.value
            self._check(node.value, argument.type, f"Argument '{name}'", name, node)
        return Visitor.SKIP

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: Any) -> Any:
        type_ = type_from_ast(self.context.schema, node.type)
        if node.default_value is not None and type_ is not None and is_input_type(type_):
            name = f"${node.variable.name.value}"
            self._check(node.default_value, type_, f"The default of variable '{name}'", name, node)
        return Visitor.SKIP

    def _check(self, value: ValueNode, type_: Any, subject: str, name: str, node: Node) -> None:
        root = root_of(type_, name)
        for problem in problems(LITERALS, value, type_):
            self.report_error(input_error(subject, name, root, problem, node))
