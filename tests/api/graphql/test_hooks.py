"""The schema's extension hooks (api/graphql/hooks.py) run as Strawberry's own runner runs
them: the same hooks, in the same order, seeing the same errors; only found once per class."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from api.graphql.hooks import HooksRunner

LOG: list[str] = []


class Failing(Exception):
    pass


def _seen(error: BaseException | None) -> str:
    return "" if error is None else f" saw {type(error).__name__}"


class SyncHooks(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        LOG.append("sync operation in")
        try:
            yield
        except Exception as error:
            LOG.append(f"sync operation out{_seen(error)}")
            raise
        LOG.append("sync operation out")

    def on_execute(self) -> Iterator[None]:
        LOG.append("sync execute in")
        yield
        LOG.append("sync execute out")


class AsyncHooks(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        LOG.append("async operation in")
        try:
            yield
        except Exception as error:
            LOG.append(f"async operation out{_seen(error)}")
            raise
        LOG.append("async operation out")

    async def on_parse(self) -> AsyncIterator[None]:
        LOG.append("async parse in")
        yield
        LOG.append("async parse out")

    async def on_validate(self) -> AsyncIterator[None]:
        LOG.append("async validate in")
        yield
        LOG.append("async validate out")


class PlainHooks(SchemaExtension):
    """Hooks that are plain functions and coroutine functions, not generators."""

    def on_validate(self) -> None:  # type: ignore[override]
        LOG.append("plain validate")

    async def on_execute(self) -> None:  # type: ignore[override]
        LOG.append("coroutine execute")


class FailsLeaving(SchemaExtension):
    """Raises when its execute hook is left: the hooks outside it see the error."""

    def on_execute(self) -> Iterator[None]:
        LOG.append("failing execute in")
        yield
        LOG.append("failing execute out")
        raise Failing


class Suppresses(SchemaExtension):
    """Swallows what the hooks inside it raise (contextlib's rule: a generator that does not
    re-raise ends the error)."""

    def on_execute(self) -> Iterator[None]:
        LOG.append("suppressing execute in")
        try:
            yield
        except Failing:
            LOG.append("suppressing execute swallowed Failing")


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        LOG.append("resolver")
        return "hi"

    @strawberry.field
    def broken(self) -> str:
        raise ValueError("a resolver error is a result, not an exception through the hooks")


class Ours(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return HooksRunner(execution_context=execution_context, extensions=extensions)


async def _log_of(schema_class: type[strawberry.Schema], extensions: list[Any], query: str) -> Any:
    LOG.clear()
    schema = schema_class(query=Query, extensions=extensions)
    try:
        result = await schema.execute(query)
        outcome = (result.data, [e.message for e in result.errors or ()])
    except Exception as error:
        outcome = (type(error).__name__, str(error))
    return list(LOG), outcome


CASES = [
    ([SyncHooks, AsyncHooks, PlainHooks], "{ hello }"),
    ([AsyncHooks, SyncHooks, PlainHooks], "{ hello broken }"),
    ([SyncHooks, AsyncHooks], "{ nosuchfield }"),
    ([SyncHooks, AsyncHooks], "{ hello "),
    ([SyncHooks, AsyncHooks, FailsLeaving], "{ hello }"),
    ([SyncHooks, Suppresses, FailsLeaving], "{ hello }"),
    ([FailsLeaving, Suppresses, SyncHooks], "{ hello }"),
]


@pytest.mark.parametrize(("extensions", "query"), CASES)
async def test_the_hooks_run_as_strawberry_runs_them(extensions: list[Any], query: str) -> None:
    theirs = await _log_of(strawberry.Schema, extensions, query)
    ours = await _log_of(Ours, extensions, query)
    assert ours == theirs
    assert ours[0], "the hooks ran"


async def test_a_hook_failing_on_its_way_in_lets_the_hooks_entered_before_it_finish() -> None:
    """The one difference from Strawberry, on purpose: Strawberry leaves the hooks entered
    before a failing one to the garbage collector; here each is left with the error."""

    class FailsEntering(SchemaExtension):
        async def on_operation(self) -> AsyncIterator[None]:
            LOG.append("failing operation in")
            raise Failing
            yield  # pragma: no cover - a generator that fails before its yield

    LOG.clear()
    schema = Ours(query=Query, extensions=[SyncHooks, AsyncHooks, FailsEntering])
    result = await schema.execute("{ hello }")
    assert result.errors
    assert LOG == [
        "sync operation in",
        "async operation in",
        "failing operation in",
        "async operation out saw Failing",
        "sync operation out saw Failing",
    ]


async def test_synchronous_execution_runs_synchronous_hooks_and_refuses_asynchronous_ones() -> None:
    LOG.clear()
    result = Ours(query=Query, extensions=[SyncHooks]).execute_sync("{ hello }")
    assert result.data == {"hello": "hi"}
    assert LOG == [
        "sync operation in",
        "sync execute in",
        "resolver",
        "sync execute out",
        "sync operation out",
    ]
    # An asynchronous hook cannot run there: refused as Strawberry refuses it.
    theirs = strawberry.Schema(query=Query, extensions=[AsyncHooks]).execute_sync("{ hello }")
    ours = Ours(query=Query, extensions=[AsyncHooks]).execute_sync("{ hello }")
    assert ours.data is None
    assert theirs.data is None
    assert [e.message.split(" at 0x")[0] for e in ours.errors or ()] == [
        e.message.split(" at 0x")[0] for e in theirs.errors or ()
    ]
    assert "failed to complete synchronously" in str(ours.errors)


async def test_each_hook_is_left_once_when_one_swallows_the_error_of_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hooks as plain context managers, counting how often each is left: a hook swallowing
    the error another raised on its way out must not make the phase leave anyone twice."""
    from api.graphql import hooks

    left: list[str] = []

    class Manager:
        def __init__(self, name: str, raises: bool = False, swallows: bool = False) -> None:
            self.name, self.raises, self.swallows = name, raises, swallows

        def __enter__(self) -> None:
            pass

        def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
            left.append(self.name if kind is None else f"{self.name} saw {kind.__name__}")
            if self.raises:
                raise Failing
            return self.swallows

    class Outer(SchemaExtension):
        def on_execute(self) -> Iterator[None]:  # pragma: no cover - replaced below
            yield

    class Middle(Outer):
        pass

    class Inner(Outer):
        pass

    for cls, manager in (
        (Outer, Manager("outer")),
        (Middle, Manager("middle", swallows=True)),
        (Inner, Manager("inner", raises=True)),
    ):
        monkeypatch.setitem(hooks._ENTRIES, (cls, "on_execute"), ((lambda _, m=manager: m), False))
    phase = hooks.Phase([Outer(), Middle(), Inner()], "on_execute")
    async with phase:
        pass
    assert left == ["inner", "middle saw Failing", "outer"]
