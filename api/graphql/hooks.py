"""The schema extensions' hooks, entered for each operation at a fraction of Strawberry's cost.

For every operation and each of its four phases (operation, parsing, validation, executing)
Strawberry's runner asks every extension whether its class defines the phase's hook, inspecting
the function's code flags, and wraps each hook it finds anew (`contextlib.contextmanager` of a
bound method, with `functools.update_wrapper`). With the service's eight extensions that was
about a third of the server's work for a small request. Here, what a class defines and how it
is entered is decided once per class; the hooks run as Strawberry runs them: in the order of
the schema's extensions, left in the reverse order, an exception passed through each as
contextlib's exit stack passes it (any hook may see it, handle it or replace it).

One difference, on purpose: when a hook fails while the phase is being entered, the hooks
entered before it are left with that error (Strawberry leaves their generators to the
collector), so a hook that holds something (a timer, an audit record) always finishes."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

# A phase's hook of one class: the context manager factory taking the extension, and whether
# the manager is asynchronous.
Entry = tuple[Callable[[SchemaExtension], Any], bool]


_ENTRIES: dict[tuple[type[SchemaExtension], str], Entry | None] = {}


def entry(cls: type[SchemaExtension], hook_name: str) -> Entry | None:
    """How the hook `hook_name` of extension class `cls` is entered; None: not defined."""
    key = (cls, hook_name)
    if key not in _ENTRIES:
        _ENTRIES[key] = _entry(cls, hook_name)
    return _ENTRIES[key]


def _entry(cls: type[SchemaExtension], hook_name: str) -> Entry | None:
    hook = getattr(cls, hook_name)
    if hook is getattr(SchemaExtension, hook_name):
        return None
    if inspect.isgeneratorfunction(hook):
        return contextlib.contextmanager(hook), False
    if inspect.isasyncgenfunction(hook):
        return contextlib.asynccontextmanager(hook), True
    if inspect.iscoroutinefunction(hook):

        async def awaited(extension: SchemaExtension) -> AsyncIterator[None]:
            await hook(extension)
            yield

        return contextlib.asynccontextmanager(awaited), True
    if callable(hook):

        def called(extension: SchemaExtension) -> Iterator[None]:
            hook(extension)
            yield

        return contextlib.contextmanager(called), False
    raise ValueError(f"Hook {hook_name} on {cls.__name__} must be callable, received {hook!r}")


class Phase:
    """One phase's hooks of one operation, as an (async) context manager."""

    __slots__ = ("_entered", "_extensions", "_hook_name", "_managers", "_sync")

    def __init__(self, extensions: list[SchemaExtension], hook_name: str) -> None:
        self._extensions, self._hook_name = extensions, hook_name
        self._managers: list[tuple[Any, bool]] = []
        for extension in extensions:
            found = entry(type(extension), hook_name)
            if found is not None:
                self._managers.append((found[0](extension), found[1]))
        self._entered: list[tuple[Any, bool]] = []

    async def __aenter__(self) -> None:
        for manager, is_async in self._managers:
            try:
                if is_async:
                    await manager.__aenter__()
                else:
                    manager.__enter__()
            except BaseException as failed:  # the ones entered leave with the error
                await self._stack().__aexit__(type(failed), failed, failed.__traceback__)
                raise
            self._entered.append((manager, is_async))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if kind is not None:
            return bool(await self._stack().__aexit__(kind, error, traceback))
        entered = self._entered
        while entered:  # the common way out: no error, each hook resumed after its yield
            manager, is_async = entered.pop()
            try:
                if is_async:
                    await manager.__aexit__(None, None, None)
                else:
                    manager.__exit__(None, None, None)
            except BaseException:
                async with self._stack():  # the rest leave with the new error
                    raise
        return False

    def __enter__(self) -> None:
        # Strawberry's synchronous execution: no asynchronous hook can run there.
        for extension in self._extensions:
            found = entry(type(extension), self._hook_name)
            if found is not None and found[1]:
                raise RuntimeError(
                    f"SchemaExtension hook {extension}.{self._hook_name} "
                    "failed to complete synchronously."
                )
        with contextlib.ExitStack() as stack:
            for manager, _ in self._managers:
                stack.enter_context(manager)
            self._sync: contextlib.ExitStack = stack.pop_all()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return bool(self._sync.__exit__(kind, error, traceback))

    def _stack(self) -> contextlib.AsyncExitStack:
        """An exit stack holding the hooks entered and not yet left (contextlib's own rules
        for passing an error through them), emptied from this phase."""
        stack = contextlib.AsyncExitStack()
        for manager, is_async in self._entered:
            if is_async:
                stack.push_async_exit(manager)
            else:
                stack.push(manager)
        self._entered.clear()  # in place: the loop of __aexit__ sees them gone
        return stack


class HooksRunner(SchemaExtensionsRunner):
    """Strawberry's runner with the phases above (stream results are left to Strawberry:
    once per subscription event, not per request)."""

    def operation(self) -> Any:
        return Phase(self.extensions, "on_operation")

    def validation(self) -> Any:
        return Phase(self.extensions, "on_validate")

    def parsing(self) -> Any:
        return Phase(self.extensions, "on_parse")

    def executing(self) -> Any:
        return Phase(self.extensions, "on_execute")
