"""The plans of the compiled executor (api/graphql/execution.py): Python source written for one
object selection, compiled once per distinct source, that completes a plain-data subtree.

A plan only takes the fast path when it is sure of the result: any value it does not expect
raises `FALLBACK`, and the executor gives the whole object back to graphql-core. Two shapes:

- Row by row: one function whose body completes the whole tree inline (nested objects as dict
  literals, lists of objects as loops), since in CPython a call per object costs as much as
  the object itself.
- Column-wise, for a list of objects whose selected fields are all leaves or such objects (a
  series' instances: `uid number sopClass { code }`): one list comprehension over the list,
  every read and check a clause of it (`for c in (x['uid'],) if type(c) is str or B()`, which
  CPython compiles to a plain assignment), so an item costs no function call, no `append` and
  no statement dispatch; only a value the plan refuses calls `B`, which raises `FALLBACK`.

Within a column plan, an object nested in each item whose selected fields are all exactly
checked leaves (a `sopClass { system code }` Coding) is a function of those values alone, so it
is built once per distinct tuple of them and shared by every item with the same values (most
instances of a series have one SOP class): one dict lookup in place of building and freeing a
dict. And when an item's nested dict equals the previous item's (one comparison in C), its
output is the previous one's, without reading and checking the values again (`reused` says
why an equal dict completes to the same response). The memo lives for one call of the plan
(one response), never across requests, and is capped (`_SHARED_CAP`), so unique values cost a
lookup more and no memory. Sharing output objects is safe because nothing after execution
changes a response in place: reshaping directives (api/graphql/directives.py) build new
objects, subscriptions encode the data as it is, and the result budget counts studies before
completion (tests/api/graphql/test_shared_output.py checks each)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Protocol

from graphql import (
    GraphQLBoolean,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLString,
    is_leaf_type,
)
from graphql.execution.values import get_argument_values

from api.graphql.pure import registered

Build = Callable[[Any], Any]
# Distinct nested objects one site of a plan shares per response; more are built per item.
_SHARED_CAP = 256
# GraphQL's Int: 32-bit signed. Written into the source as literals, which CPython folds into
# constants (a name would be looked up, and `-M` negated, on every value).
_INT_RANGE = f"{-(2**31)} <= {{v}} < {2**31}"


class Fallback(Exception):
    """The plan cannot be sure: graphql-core completes this object instead."""


FALLBACK = Fallback()


def _refuse() -> Any:
    raise FALLBACK


class Executor(Protocol):
    """What a plan is written from: the executor's field collection and variables."""

    variable_values: Any

    def collect_subfields(self, return_type: GraphQLObjectType, field_details_list: Any) -> Any:
        """graphql-core's own collection of the subfields (fragments, @skip, @include)."""


def _coerce(type_: Any) -> Build:
    """A leaf type's own output coercion (Float, JSON, enums), refusing what it refuses."""
    coerce = type_.coerce_output_value

    def leaf(v: Any) -> Any:
        if type(v) is float and not math.isfinite(v):
            raise FALLBACK
        try:
            coerced = coerce(v)
        except Exception:  # the reference path reports it
            raise FALLBACK from None
        if coerced is None:
            raise FALLBACK
        return coerced

    return leaf


# Checks that leave a leaf value as it is: exactly what graphql-core would return for it. Row
# plans raise when the refusal holds; column plans go on while the check holds.
_REFUSALS = {
    GraphQLString.name: "type({v}) is not str",
    GraphQLID.name: "type({v}) is not str",
    GraphQLInt.name: f"type({{v}}) is not int or not {_INT_RANGE}",
    GraphQLBoolean.name: "type({v}) is not bool",
}
_CHECKS = {
    GraphQLString.name: "type({v}) is str",
    GraphQLID.name: "type({v}) is str",
    GraphQLInt.name: f"(type({{v}}) is int and {_INT_RANGE})",
    GraphQLBoolean.name: "type({v}) is bool",
}


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    return compile(source, "<compiled selection>", "exec")


def _passes(check: str, nullable: str | None, absent: str | None) -> str:
    """The condition of a comprehension clause: `check`, or the value may be null (`nullable`
    is None), or its object is absent (`absent` is None), or else `B()` refuses. The check
    comes first: on valid data it is the one test made."""
    alternatives = [check, *(f"{v} is None" for v in (nullable, absent) if v is not None)]
    return " or ".join([*alternatives, "B()"])


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


class Codegen:
    """Writes the source of the plan for one object selection. Values the source needs
    (resolvers, arguments, coercions) are bound by name in its namespace, so equal selections
    give equal source and compile once (code objects are cached across requests)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.env: dict[str, Any] = {"F": FALLBACK, "B": _refuse}
        self.count = 0
        self.active: set[tuple[str, int]] = set()
        self.memos: list[str] = []  # dicts the plan makes anew on each call (see `shared`)
        self.helpers: list[str] = []  # lines defining the plan's helpers (see `reused`)

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def bind(self, value: Any) -> str:
        name = self.name("b")
        self.env[name] = value
        return name

    def build(self, type_: GraphQLObjectType, field_details_list: Any) -> Build | None:
        body = self.object(type_, field_details_list, "d")
        if body is None:
            return None
        # A required element read by subscript raises KeyError when it is missing; comparing
        # an item's nested object with the previous one (`reused`) may recurse too deep.
        source = "\n".join(
            [
                "def plan(d):",
                *(f"  {memo} = {{}}" for memo in self.memos),
                *(f"  {line}" for line in self.helpers),
                "  try:",
                *("    " + line for line in body),
                "  except (KeyError, RecursionError):",
                "    raise F from None",
                "  return d",
            ]
        )
        env = dict(self.env)
        exec(_compiled(source), env)
        plan: Build = env["plan"]
        return plan

    def subfields(self, type_: GraphQLObjectType, field_details_list: Any) -> Any:
        """The grouped subfields of a selection, or None when they stay with graphql-core."""
        grouped, defer_usages, _ = self.executor.collect_subfields(type_, field_details_list)
        return None if defer_usages else grouped  # incremental delivery: graphql-core's

    def object(
        self, type_: GraphQLObjectType, field_details_list: Any, var: str
    ) -> list[str] | None:
        """Lines turning the dict in `var` into the completed object, in `var`."""
        key = (type_.name, id(field_details_list))
        if key in self.active:
            return None  # a selection inside itself cannot be inlined
        grouped = self.subfields(type_, field_details_list)
        if grouped is None:
            return None
        self.active.add(key)
        try:
            lines = [f"if type({var}) is not dict: raise F"]
            keys = []
            for response_key, details in grouped.items():
                value = self.name("v")
                field = self.field(type_, details, var, value)
                if field is None:
                    return None
                lines += field
                keys.append(f"{response_key!r}: {value}")
            return [*lines, f"{var} = {{{', '.join(keys)}}}"]
        finally:
            self.active.discard(key)

    def field(
        self, parent: GraphQLObjectType, details: Any, source: str, var: str
    ) -> list[str] | None:
        node = details[0].node
        name = node.name.value
        if name == "__typename":
            return [f"{var} = {parent.name!r}"]
        field = parent.fields.get(name)
        if field is None:
            return None
        if getattr(field.resolve, "_is_default", False):
            # Subscript for a required element (missing: KeyError, see build); get otherwise.
            required = isinstance(field.type, GraphQLNonNull)
            read = [
                f"{var} = {source}[{name!r}]" if required else f"{var} = {source}.get({name!r})"
            ]
        else:
            pure = registered(parent.name, name)
            if pure is None:
                return None
            try:
                args = get_argument_values(
                    field,
                    node,
                    self.executor.variable_values,
                    details[0].fragment_variable_values,
                )
            except Exception:  # a bad argument: graphql-core reports it with its path
                return None
            if pure.stored_without_arguments and all(v is None for v in args.values()):
                # Its resolver would return the stored element as it is: read it inline.
                read = [f"{var} = {source}.get({name!r})"]
            else:
                # A resolver error (a _count out of range, ...) is reported by the reference.
                read = [
                    "try:",
                    f"    {var} = {self.bind(pure.resolve)}({source}, **{self.bind(args)})",
                    "except Exception:",
                    "    raise F from None",
                ]
        complete = self.complete(field.type, var, details)
        return None if complete is None else read + complete

    def complete(self, type_: Any, var: str, details: Any) -> list[str] | None:
        """Lines that check `var` against `type_` and replace it by its completed value."""
        if isinstance(type_, GraphQLNonNull):
            inner = self.value(type_.of_type, var, details)
            if inner is None:
                return None
            # The type checks below (str, int, bool, dict, list) already refuse None.
            checked = inner[0].startswith(f"if type({var}) is not")
            return inner if checked else [f"if {var} is None: raise F", *inner]
        inner = self.value(type_, var, details)
        return None if inner is None else [f"if {var} is not None:", *_indent(inner)]

    def value(self, type_: Any, var: str, details: Any) -> list[str] | None:
        """Lines completing a value known not to be None."""
        if isinstance(type_, GraphQLList):
            columns = self.columns(type_.of_type, var, details)
            if columns is not None:
                return [f"if type({var}) is not list: raise F", f"{var} = {columns}"]
            items, item, append = self.name("l"), self.name("x"), self.name("a")
            each = self.complete(type_.of_type, item, details)
            if each is None:
                return None
            return [
                f"if type({var}) is not list: raise F",
                f"{items} = []",
                f"{append} = {items}.append",
                f"for {item} in {var}:",
                *_indent(each),
                f"    {append}({item})",
                f"{var} = {items}",
            ]
        if is_leaf_type(type_):
            check = _REFUSALS.get(type_.name)
            return (
                [f"if {check.format(v=var)}: raise F"]
                if check
                else [f"{var} = {self.bind(_coerce(type_))}({var})"]
            )
        if isinstance(type_, GraphQLObjectType):
            return self.object(type_, details, var)
        return None  # interfaces and unions: not in this schema's plain-data part

    # -- column-wise: a list of leaf-only objects as one comprehension --------------------------

    def columns(self, item_type: Any, items: str, details: Any) -> str | None:
        """A comprehension completing the list in `items` (known to be a list), or None when
        its items are not leaf-only objects."""
        required = isinstance(item_type, GraphQLNonNull)
        object_type = item_type.of_type if required else item_type
        if not isinstance(object_type, GraphQLObjectType):
            return None
        item = self.name("x")
        clauses = [f"for {item} in {items} if {self.is_dict(item, required)}"]
        built = self.flat(object_type, details, item, None if required else item, clauses)
        if built is None:
            return None
        return f"[{self.maybe(built[0], item, required)} {' '.join(clauses)}]"

    @staticmethod
    def is_dict(var: str, required: bool, absent: str | None = None) -> str:
        return _passes(f"type({var}) is dict", None if required else var, absent)

    @staticmethod
    def maybe(expression: str, var: str, required: bool) -> str:
        return expression if required else f"(None if {var} is None else {expression})"

    def reused(self, type_: GraphQLObjectType, details: Any, var: str) -> str | None:
        """For a nested object whose selected fields are all exactly checked leaves, the
        expression of its completed object from the dict in `var`, made only when that dict
        differs from the previous item's: a call of a helper (written into the plan, see
        `build`) that reads, checks and builds it (`shared`) and remembers both. The
        expression is evaluated only where the object is present, a dict. None: the object
        is not of that kind.

        An equal dict (as Python compares them) has the same selected values by `==`, which
        for the exactly checked leaves means the same response: String and ID values equal
        only strings; an Int equal to an int is a bool or an integral float, which
        graphql-core completes as that int, and a Boolean equal to a bool an int or float,
        which it completes as that bool."""
        clauses: list[str] = []
        helpers, memos = len(self.helpers), len(self.memos)
        built = self.flat(type_, details, var, None, clauses)
        if built is None or built[1] is None:
            del self.helpers[helpers:], self.memos[memos:]  # written again by the caller
            return None
        helper, last = self.name("h"), self.name("p")
        self.helpers += [
            f"{last} = [None, None]",
            f"def {helper}({var}):",
            f"    o = [{self.shared(built[0], built[1])} for {var} in ({var},) "
            f"{' '.join(clauses)}][0]",
            f"    {last}[0], {last}[1] = {var}, o",
            "    return o",
        ]
        return f"({last}[1] if {var} == {last}[0] else {helper}({var}))"

    def shared(self, expression: str, keys: list[str]) -> str:
        """`expression`, an object made of the values in `keys` alone (each checked to be
        exactly a str, int or bool, or None, so equal keys mean an equal response), built once
        per distinct key tuple in this call of the plan (up to `_SHARED_CAP` of them)."""
        memo = self.name("m")
        self.memos.append(memo)
        key = keys[0] if len(keys) == 1 else f"({''.join(k + ', ' for k in keys)})"
        return (
            f"({memo}.get({key}) or ({memo}.setdefault({key}, {expression}) "
            f"if len({memo}) < {_SHARED_CAP} else {expression}))"
        )

    def flat(
        self,
        type_: GraphQLObjectType,
        details: Any,
        source: str,
        absent: str | None,
        clauses: list[str],
    ) -> tuple[str, list[str] | None] | None:
        """The expression of the completed object read from the dict in `source`, whose reads
        and checks are appended to `clauses`, and the variables it is made of when they are
        all exactly checked leaves (else None: it may not be shared); None when a field is not
        a leaf or a leaf-only object. `absent` names the variable that is None when the object
        is (its own, or an enclosing object's): reads and checks then give None and pass."""
        grouped = self.subfields(type_, details)
        if grouped is None:
            return None
        entries = []
        keys: list[str] | None = []
        for response_key, field_details in grouped.items():
            name = field_details[0].node.name.value
            if name == "__typename":
                entries.append(f"{response_key!r}: {type_.name!r}")
                continue
            field = type_.fields.get(name)
            if field is None or not getattr(field.resolve, "_is_default", False):
                return None
            required = isinstance(field.type, GraphQLNonNull)
            inner = field.type.of_type if required else field.type
            var = self.name("c")
            read = f"{source}[{name!r}]" if required else f"{source}.get({name!r})"
            if absent is not None:
                read = f"None if {absent} is None else {read}"
            if isinstance(inner, GraphQLObjectType):
                clauses.append(f"for {var} in ({read},) if {self.is_dict(var, required, absent)}")
                expression = self.reused(inner, field_details, var)
                if expression is None:
                    # Its fields are absent when it is, or when it is required but its parent
                    # absent.
                    inside = None if required and absent is None else var
                    built = self.flat(inner, field_details, var, inside, clauses)
                    if built is None:
                        return None
                    expression = built[0]
                entries.append(f"{response_key!r}: {self.maybe(expression, var, required)}")
                keys = None
                continue
            if not is_leaf_type(inner):
                return None  # lists stay row by row
            check = _CHECKS.get(inner.name)
            if check is not None:
                ok = _passes(check.format(v=var), None if required else var, absent)
                clauses.append(f"for {var} in ({read},) if {ok}")
                entries.append(f"{response_key!r}: {var}")
                if keys is not None:
                    keys.append(var)
                continue
            # Another leaf (Float, JSON, an enum): its own coercion, a call on each value.
            coerce = f"{self.bind(_coerce(inner))}({var})"
            if required:
                clauses.append(
                    f"for {var} in ({read},) if {_passes(f'{var} is not None', None, absent)}"
                )
            else:
                clauses.append(f"for {var} in ({read},)")
            entries.append(f"{response_key!r}: {self.maybe(coerce, var, required)}")
            keys = None  # a coerced value (a float, an enum) may equal another type's
        return "{" + ", ".join(entries) + "}", keys
