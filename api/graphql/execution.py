"""A compiled execution context for plain-data subtrees.

graphql-core completes every field of a response through several Python calls (resolve,
complete, coerce, path bookkeeping): microseconds per field, hundreds of milliseconds for a
10,000-instance study. Below the root resolvers, though, our schema is plain data: FHIR JSON
dicts read by key, plus a few pure resolvers (nested paging, fhirJson, Extension.value).

So when graphql-core is about to complete an object from a dict, this context builds a plan
for that selection once per request (fields collected by graphql-core itself, so fragments,
aliases and @include/@skip mean exactly what they mean there) and runs it: a tree of small
closures that read, check and copy values. The plan only takes the fast path when it is sure of
the result; anything unusual (a null in a non-null position, a value of an unexpected type, a
resolver error) makes it give the whole object back to graphql-core, which then produces the
reference result, errors and null propagation included. Results are therefore identical by
construction; tests/api/graphql/test_execution.py checks it against the reference executor.

Building the executor coerces the variables: for a write of a large study, a million values
walked in Python, seconds during which the event loop would serve no other request. So a
mutation with variables builds its executor in a worker thread (`_BuiltOffTheLoop`): the
coercion is pure, and its errors are the very same."""

from __future__ import annotations

import asyncio
import functools
import gc
import math
from collections.abc import Callable
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLBoolean,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLString,
    OperationDefinitionNode,
    OperationType,
    is_leaf_type,
)
from graphql.execution.values import get_argument_values
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from api.graphql.types.datatypes import extension_value
from api.graphql.types.repeating import REPEATING
from store.interop.files import canonical

Build = Callable[[Any], Any]
_MAX_INT = 2**31
# Non-default resolvers the plans may call directly: pure functions of the parent and the
# field's arguments. Any other resolver keeps its object on graphql-core's path.
# Every repeating element's is one too: REPEATING (api/graphql/types/repeating.py), read when a plan
# is built, as the types register them when they are defined (after this module may load).
PURE_RESOLVERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("ImagingStudy", "fhirJson"): canonical,
    ("Extension", "value"): extension_value,
}


class _Fallback(Exception):
    """The plan cannot be sure: graphql-core completes this object instead."""


_FALLBACK = _Fallback()


def _coerce(type_: Any) -> Build:
    """A leaf type's own output coercion (Float, JSON, enums), refusing what it refuses."""
    coerce = type_.coerce_output_value

    def leaf(v: Any) -> Any:
        if type(v) is float and not math.isfinite(v):
            raise _FALLBACK
        try:
            coerced = coerce(v)
        except Exception:  # the reference path reports it
            raise _FALLBACK from None
        if coerced is None:
            raise _FALLBACK
        return coerced

    return leaf


# Checks that leave a leaf value as it is: exactly what graphql-core would return for it.
_CHECKS = {
    GraphQLString.name: "type({v}) is not str",
    GraphQLID.name: "type({v}) is not str",
    GraphQLInt.name: "type({v}) is not int or not -M <= {v} < M",
    GraphQLBoolean.name: "type({v}) is not bool",
}


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    return compile(source, "<compiled selection>", "exec")


class _Codegen:
    """Writes the Python source of the plan for one object selection: a single function whose
    body completes the whole tree inline (nested objects as dict literals, lists of objects as
    loops), since in CPython a call per object costs as much as the object itself. Values the
    source needs (resolvers, arguments, coercions) are bound by name in its namespace, so equal
    selections give equal source and compile once (code objects are cached across requests)."""

    def __init__(self, context: CompiledExecutionContext) -> None:
        self.context = context
        self.env: dict[str, Any] = {"F": _FALLBACK, "M": _MAX_INT}
        self.count = 0
        self.active: set[tuple[str, int]] = set()

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
        # A required element read by subscript raises KeyError when it is missing.
        source = "\n".join(
            [
                "def plan(d):",
                "  try:",
                *("    " + line for line in body),
                "  except KeyError:",
                "    raise F from None",
                "  return d",
            ]
        )
        env = dict(self.env)
        exec(_compiled(source), env)
        plan: Build = env["plan"]
        return plan

    def object(
        self, type_: GraphQLObjectType, field_details_list: Any, var: str
    ) -> list[str] | None:
        """Lines turning the dict in `var` into the completed object, in `var`."""
        key = (type_.name, id(field_details_list))
        if key in self.active:
            return None  # a selection inside itself cannot be inlined
        grouped, defer_usages, _ = self.context.collect_subfields(type_, field_details_list)
        if defer_usages:
            return None  # incremental delivery stays with graphql-core
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
            pure = PURE_RESOLVERS.get((parent.name, name)) or REPEATING.get((parent.name, name))
            if pure is None:
                return None
            try:
                args = get_argument_values(
                    field, node, self.context.variable_values, details[0].fragment_variable_values
                )
            except Exception:  # a bad argument: graphql-core reports it with its path
                return None
            if (parent.name, name) in REPEATING and all(v is None for v in args.values()):
                # A repeating element without arguments is its stored list as it is: read
                # inline, as a default field (its resolver would return the same value).
                read = [f"{var} = {source}.get({name!r})"]
                complete = self.complete(field.type, var, details)
                return None if complete is None else read + complete
            # A resolver error (a _count out of range, ...) is reported by the reference path.
            read = [
                "try:",
                f"    {var} = {self.bind(pure)}({source}, **{self.bind(args)})",
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
        return (
            None
            if inner is None
            else [f"if {var} is not None:", *("    " + line for line in inner)]
        )

    def value(self, type_: Any, var: str, details: Any) -> list[str] | None:
        """Lines completing a value known not to be None."""
        if isinstance(type_, GraphQLList):
            items, item, append = self.name("l"), self.name("x"), self.name("a")
            each = self.complete(type_.of_type, item, details)
            if each is None:
                return None
            return [
                f"if type({var}) is not list: raise F",
                f"{items} = []",
                f"{append} = {items}.append",
                f"for {item} in {var}:",
                *("    " + line for line in each),
                f"    {append}({item})",
                f"{var} = {items}",
            ]
        if is_leaf_type(type_):
            check = _CHECKS.get(type_.name)
            return (
                [f"if {check.format(v=var)}: raise F"]
                if check
                else [f"{var} = {self.bind(_coerce(type_))}({var})"]
            )
        if isinstance(type_, GraphQLObjectType):
            return self.object(type_, details, var)
        return None  # interfaces and unions: not in this schema's plain-data part


def _is_mutation(document: DocumentNode, operation_name: str | None) -> bool:
    """Whether the operation graphql-core will run is a mutation (chosen as it chooses)."""
    operations = [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or (d.name and d.name.value == operation_name))
    ]
    return len(operations) == 1 and operations[0].operation == OperationType.MUTATION


class _BuiltOffTheLoop:
    """Stands in for an executor whose building (the coercion of its variables) runs in a
    worker thread once the operation is awaited; the result is the executor's own. (So such
    a mutation cannot run through `Schema.execute_sync`, which this service never uses.)"""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    async def execute_operation(self) -> Any:
        executor = await asyncio.to_thread(self._build)
        if isinstance(executor, list):  # variable errors, as graphql-core returns them
            return ExecutionResult(None, errors=executor)
        result = executor.execute_operation()
        return await result if isawaitable(result) else result


class CompiledExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor with compiled completion of plain-data objects, whose
    mutations coerce their variables off the event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans: dict[tuple[str, int], tuple[Any, Build | None]] = {}

    @classmethod
    def build(
        cls,
        schema: Any,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        build = functools.partial(
            super().build,
            schema,
            document,
            root_value,
            context_value,
            raw_variable_values,
            operation_name,
            *args,
            **kwargs,
        )
        if raw_variable_values and _is_mutation(document, operation_name):
            return _BuiltOffTheLoop(build)
        return build()

    def _plan(self, type_: GraphQLObjectType, field_details_list: Any) -> Build | None:
        """The plan of a selection on `type_`, made once per request; None: no plan."""
        # Field middleware (an extension with a `resolve` hook) must see every field: then
        # graphql-core does the whole job. Strawberry always passes a manager, maybe empty.
        middleware = self.middleware_manager
        if middleware is not None and middleware.middlewares:
            return None
        # Keyed by the list's id, and holding the list: an id is unique only while its object
        # lives, and a list freed mid-request could hand its id to another selection.
        key = (type_.name, id(field_details_list))
        found = self._plans.get(key)
        if found is None or found[0] is not field_details_list:
            found = self._plans[key] = (
                field_details_list,
                _Codegen(self).build(type_, field_details_list),
            )
        return found[1]

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any = None,
    ) -> Any:
        plan = self._plan(return_type, field_details_list) if type(result) is dict else None
        if plan is not None:
            # A plan allocates only acyclic JSON containers, which reference counting
            # frees; the cyclic collector, triggered every few hundred allocations, would
            # rescan every live object (the study being read among them) for nothing.
            # Plans never await, so pausing it covers this call alone.
            try:
                return _collector_paused(lambda: plan(result))
            except _Fallback:
                pass
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def complete_list_value(
        self,
        return_type: GraphQLList[Any],
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any = None,
    ) -> Any:
        # A list of objects a resolver returned (an import's 30,000 results) in one pass of
        # the item's plan, not one graphql-core completion per item; an item the plan is not
        # sure of (a null, a non-dict) gives the whole list back to graphql-core.
        item_type = return_type.of_type
        if isinstance(item_type, GraphQLNonNull):
            item_type = item_type.of_type
        plan = (
            self._plan(item_type, field_details_list)
            if type(result) is list and isinstance(item_type, GraphQLObjectType)
            else None
        )
        if plan is not None:
            try:
                return _collector_paused(lambda: [plan(item) for item in result])
            except _Fallback:
                pass
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )


def _collector_paused(run: Callable[[], Any]) -> Any:
    """Runs a plan with the cyclic collector paused (see complete_object_value)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return run()
    finally:
        if collecting:
            gc.enable()
