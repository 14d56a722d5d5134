"""A Connection cursor carries the search it continues, so `_cursor` works alone.

The search is the field's arguments as the caller sent them (search values, `_sort`, and any
filter argument the field has), less the cursor itself; `_count`, the page size, is carried too
but may be changed on any page. With a cursor, an argument sent again must be what the cursor
carries (else BAD_USER_INPUT): a cursor continues one search, never a changed one. The cursor
is encrypted (store/mongo/paging.py), so the values it carries are not readable in a URL or a log;
they are only ever what its maker sent, never what the access gate adds (the patient a token
is confined to), and the gate confines every page again at run time."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from store.fhir.outcome import BAD_USER_INPUT, fail

T = TypeVar("T")
# Not part of the search: where a page starts, and who asks.
_NOT_SEARCH = frozenset({"self", "info", "_cursor"})
_PAGE_SIZE = "_count"


def _same(sent: Any, carried: Any) -> bool:
    # A list of values is a set of alternatives: their order does not change the search.
    if isinstance(sent, list) and isinstance(carried, list):
        return sorted(map(str, sent)) == sorted(map(str, carried))
    return bool(sent == carried)


def continues(resolver: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Makes `resolver`'s `_cursor` continue the search it came from. The resolver gets
    `search`, the arguments its cursors must carry, and hides that parameter from GraphQL."""
    signature = inspect.signature(resolver)

    @functools.wraps(resolver)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        sent = {
            name: value
            for name, value in kwargs.items()
            if name not in _NOT_SEARCH and value is not None
        }
        cursor = kwargs.get("_cursor")
        if cursor is not None:
            carried = kwargs["info"].context.store.carried(cursor)
            carried = carried if isinstance(carried, dict) else {}
            for name, value in sent.items():
                if name != _PAGE_SIZE and not _same(value, carried.get(name)):
                    raise fail(
                        BAD_USER_INPUT,
                        name,
                        "differs from the search the _cursor "
                        "continues: send the cursor alone (it carries its search), or "
                        "with the same arguments",
                    )
            kwargs.update(
                {
                    name: value
                    for name, value in carried.items()
                    if name in signature.parameters and name not in sent
                }
            )
            sent = {**carried, **sent}
        return await resolver(*args, search=sent, **kwargs)

    # inspect.signature honours __signature__ (PEP 362), which typeshed does not declare on
    # functions.
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "search"]
    )
    return wrapper
