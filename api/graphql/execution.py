"""A compiled execution context for plain-data subtrees.

graphql-core completes every field of a response through several Python calls (resolve,
complete, coerce, path bookkeeping): microseconds per field, hundreds of milliseconds for a
10,000-instance study. Below the root resolvers, though, our schema is plain data: FHIR JSON
dicts read by key, plus a few pure resolvers (nested paging, fhirJson, Extension.value).

So when graphql-core is about to complete an object from a dict, this context builds a plan
for that selection once per request (fields collected by graphql-core itself, so fragments,
aliases and @include/@skip mean exactly what they mean there) and runs it: generated Python
that reads, checks and copies values (api/graphql/plans.py). The plan only takes the fast path
when it is sure of the result; anything unusual (a null in a non-null position, a value of an
unexpected type, a resolver error) makes it give the whole object back to graphql-core, which
then produces the reference result, errors and null propagation included. Results are
therefore identical by construction; tests/api/graphql/test_execution.py checks it against the
reference executor. Fields with resolvers of their own are planned only when their type
registered the resolver as pure (api/graphql/pure.py): this module imports no schema module.

graphql-core 3.3 marks every completion method of its `Executor` private (":meta private:");
its public hooks (`Executor.build`, `execute_operation`, resolvers, middleware,
`ExecutionHooks`) cannot complete an object in its place. So the engine overrides two of
those methods and calls a third (plans.py), all named in `GRAPHQL_CORE_PRIVATE`, and no other;
a test pins their signatures against the installed graphql-core, so an upgrade that changes
them fails the suite, not a request. `IMAGING_COMPILED=0` runs plain graphql-core
(api/graphql/schema.py).

Building the executor coerces the variables: for a write of a large study, a million values
walked in Python, seconds during which the event loop would serve no other request. So a
mutation with variables builds its executor in a worker thread (`_BuiltOffTheLoop`): the
coercion is pure, and its errors are the very same."""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any, TypeVar

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfoHelpers,
    OperationDefinitionNode,
    OperationType,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from api.graphql.plans import Build, Codegen, Fallback
from api.graphql.shared_plans import SharedPlans

# The private graphql-core methods the engine overrides (the first two) or calls (the last):
# see the module's docstring.
GRAPHQL_CORE_PRIVATE = ("complete_object_value", "complete_list_value", "collect_subfields")
SHARED = SharedPlans()  # api/graphql/shared_plans.py
T = TypeVar("T")


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


def _finished(*_: Any) -> Any:
    raise RuntimeError("asynchronous work was started after its operation finished")


# What a finished executor holds in place of its helpers (see `execute_operation`).
_FINISHED = GraphQLResolveInfoHelpers(gather=_finished, track=_finished)


async def to_the_end(running: Awaitable[T]) -> T:
    """A mutation's execution, run to its end even when the task awaiting it is cancelled (a
    WebSocket client that completes the operation or leaves): its writes then finish as they
    would have, with their undo on a failure and their audit record, rather than stopping
    between two of them. The cancellation is taken back once the mutation is done; its answer
    goes to whoever is still there."""
    task = asyncio.ensure_future(running)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()


class FinishingExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor (through Strawberry's) whose mutations run to their end."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        result = super().execute_operation(serially)
        if isawaitable(result) and self.operation.operation == OperationType.MUTATION:
            return to_the_end(result)
        return result


class CompiledExecutionContext(FinishingExecutionContext):
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

    def execute_operation(self, serially: bool | None = None) -> Any:
        """graphql-core's, after which the executor lets go of itself: its `async_helpers`
        holds two of its own bound methods, a reference cycle that kept the operation's
        variables, context and results alive until the cyclic collector's next pass (which,
        for a 30,000-entry import's Bundle, then freed them all at once on the event loop,
        holding every other request: found with the import's /healthz row)."""
        result = super().execute_operation(serially)
        if isawaitable(result):
            return self._then_let_go(result)
        self._let_go(result)
        return result

    async def _then_let_go(self, running: Any) -> Any:
        result = await running
        self._let_go(result)
        return result

    def _let_go(self, result: Any) -> None:
        # Only once nothing of the operation can still run: incremental delivery (@defer,
        # @stream) and early execution go on after the first result.
        if (
            isinstance(result, ExecutionResult)
            and not self.background_futures
            and not self.pending_incremental_futures
        ):
            self.async_helpers = _FINISHED

    def _plan(self, type_: GraphQLObjectType, field_details_list: Any) -> Build | None:
        """The plan of a selection on `type_`, found once per request (and made once for
        every request that selects the same, api/graphql/shared_plans.py); None: no plan."""
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
                SHARED.plan(
                    self,
                    type_,
                    field_details_list,
                    lambda: Codegen(self).build(type_, field_details_list),
                ),
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
            except Fallback:
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
            except Fallback:
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
