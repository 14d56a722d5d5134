"""The resolvers the compiled executor (api/graphql/execution.py) may call directly, registered
by the types that define them.

A plan completes a plain-data subtree without graphql-core, so for a field with a resolver of
its own it must know that calling the resolver is all graphql-core would do: a pure function of
the parent dict and the field's arguments (no `info`, no I/O, no await). The types say so here,
as they define such a field; the executor looks them up when it builds a plan. So the engine
imports no schema module (an import contract in .importlinter keeps it so), and a field nobody
registered keeps its object on graphql-core's path, which is always correct."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pure:
    """A registered resolver: `resolve(parent, **arguments)`."""

    resolve: Callable[..., Any]
    # Called with every argument absent, it returns the stored element itself (a repeating
    # element unfiltered and unpaged): the plan then reads the element inline, as for a field
    # without a resolver, and saves a call per parent.
    stored_without_arguments: bool = False


_REGISTERED: dict[tuple[str, str], Pure] = {}


def register(
    type_name: str,
    field_name: str,
    resolve: Callable[..., Any],
    *,
    stored_without_arguments: bool = False,
) -> None:
    """Declares the resolver of `type_name.field_name` (GraphQL names) pure; see the module."""
    _REGISTERED[(type_name, field_name)] = Pure(resolve, stored_without_arguments)


def registered(type_name: str, field_name: str) -> Pure | None:
    """The pure resolver registered for a field, or None: graphql-core resolves it."""
    return _REGISTERED.get((type_name, field_name))
