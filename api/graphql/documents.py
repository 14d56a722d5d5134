"""The parse-and-validate stage of every operation: the query text becomes a document, checked
against the schema and the query limits, before anything runs.

It is the one stage a caller can make expensive without a token: graphql-core parses about 3 us
a character and validates about 30 us a field, and a document's parsed form takes some 600
bytes a token. So:
- a document is parsed and validated off the event loop, on a small pool of its own, unless it
  is in the cache (a viewer sends the same few documents over and over): a flood of new texts
  queues behind itself, while /healthz and the cached documents of everyone else go on;
- graphql-core's overlap check gets a budget sized for real queries (20,000 units: a 3,000-field
  query of every ImagingStudy element spends none of it), so a document of thousands of
  repeated fields or fragments is refused in milliseconds, not after a second;
- the cache keeps only documents that validated, weighed by their tokens, so made-up texts
  neither fill it nor push out what viewers use; a text refused by validation is remembered
  apart with its errors (`Refused`), so sending it again costs a lookup, not another check;
- a document of more than MAX_FRAGMENTS fragment definitions is refused before validation:
  graphql-core checks each fragment's variables by walking it again (900 unused fragments of
  two fields, 40 KB, took 0.2 s of validation; found black-box);
- a cached document's depth, aliases and cost, which depend on its variables, are measured
  once per text and small set of variable values that passed (a viewer's worklist asks the
  same ones over and over): a walk of the document on every request was a tenth of the
  fixed cost of a small query."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import graphql.validation.rules.overlapping_fields_can_be_merged as overlap
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    validate,
)
from graphql.language import parse
from graphql.validation import NoSchemaIntrospectionCustomRule
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from api.graphql.limits import (
    Limits,
    limit_errors,
    rejected,
    token_rejection,
    variable_errors,
)
from api.graphql.selection import unparsed

# graphql-core reads this module attribute when a validation starts (its documented knob).
overlap.MAX_COMPLEXITY_BUDGET = 20_000
CACHE_ENTRIES = 256
CACHE_TOKENS = 200_000  # about 120 MB of parsed documents at ~600 bytes a token
MAX_FRAGMENTS = 100  # fragment definitions in one document
# Seconds of parsing and validating new texts, all requests together: a sustained rate per
# second and a burst (a viewer's first few texts at start-up). The work runs on worker threads,
# but it holds the interpreter lock and makes garbage for the collector, so a flood of new
# texts (each up to ~0.3 s) slowed every request; past the allowance a new text is refused at
# once, and texts seen before are served from the caches as usual (found black-box).
NEW_TEXT_SECONDS = 0.25
NEW_TEXT_BURST = 1.0
REFUSED_ENTRIES = 256  # texts refused by validation, remembered with their errors
MEASURED_ENTRIES = 1_024  # (query text, variable values) known to be within the limits
_SMALL_VALUES = 32  # variables of more values (or longer strings) are measured every time
_SMALL_TEXT = 256
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graphql-parse")
# A fragment definition as written (`fragment Name on Type`), counted before parsing; a string
# value holding the same words counts too, which only a document of a hundred such can notice.
_FRAGMENT = re.compile(r"\bfragment\s+[_A-Za-z][_0-9A-Za-z]*\s+on\b")
_TOKEN = re.compile(r"[_A-Za-z][_0-9A-Za-z]*|-?\d[\d.eE+-]*|\.\.\.|\"|[^\s,]")


def tokens(text: str) -> int:
    """About how many GraphQL tokens `text` holds (what a parsed document's size follows)."""
    return len(_TOKEN.findall(text))


class DocumentCache(OrderedDict[str, tuple[DocumentNode, int]]):
    """An LRU map from query text to its parsed, validated document, bounded by entries and by
    the tokens of the documents it keeps."""

    def __init__(self, size: int = CACHE_ENTRIES, budget: int = CACHE_TOKENS) -> None:
        super().__init__()
        self.size, self.budget, self.kept = size, budget, 0

    def get_document(self, text: str) -> DocumentNode | None:
        found = self.get(text)
        if found is None:
            return None
        self.move_to_end(text)
        return found[0]

    def keep(self, text: str, document: DocumentNode) -> None:
        weight = tokens(text)
        if text in self or weight > self.budget:
            return  # kept already, or larger than the whole cache
        self[text] = (document, weight)
        self.kept += weight
        while len(self) > self.size or self.kept > self.budget:
            _, (_, old) = self.popitem(last=False)
            self.kept -= old


class Allowance:
    """A token bucket of seconds: `rate` per second, at most `burst` saved. Used on the event
    loop only (charged after each piece of work comes back), so it needs no lock."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.level, self.at = burst, time.monotonic()

    def left(self) -> float:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        return self.level

    def charge(self, seconds: float) -> None:
        self.left()
        self.level -= seconds


NEW_TEXTS = Allowance(NEW_TEXT_SECONDS, NEW_TEXT_BURST)


def _busy() -> GraphQLError:
    return rejected(
        "milliseconds per second of parsing and validating query texts new to the server, by "
        "all requests together",
        int(NEW_TEXT_SECONDS * 1000),
        f"more than {int(NEW_TEXT_SECONDS * 1000)}",
        "retry in a second; a text the server has answered before is served at once",
    )


class Refused(OrderedDict[str, list[GraphQLError]]):
    """An LRU map from query text to the errors validation found in it: validation depends on
    the text and the schema alone, so the same text is refused the same way again."""

    def __init__(self, size: int = REFUSED_ENTRIES) -> None:
        super().__init__()
        self.size = size

    def errors(self, text: str) -> list[GraphQLError] | None:
        found = self.get(text)
        if found is None:
            return None
        self.move_to_end(text)
        # Fresh errors for each request: formatting one must not reach another's response.
        return [_detached(e) for e in found]

    def keep(self, text: str, errors: list[GraphQLError]) -> None:
        # Without their nodes, which would keep the whole refused document alive.
        self[text] = [_detached(e) for e in errors]
        while len(self) > self.size:
            self.popitem(last=False)


def _detached(error: GraphQLError) -> GraphQLError:
    """The same error (message, locations, extensions) without the document's nodes."""
    return GraphQLError(
        error.message,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=dict(error.extensions) if error.extensions else None,
    )


class WithinLimits(OrderedDict[tuple[str, tuple[Any, ...]], None]):
    """An LRU set of (query text, variable values) whose document was measured within the
    depth, alias and cost limits: the same document with the same values measures the same,
    so it is not walked again. Only small sets of plain values are kept (`key`)."""

    def __init__(self, size: int = MEASURED_ENTRIES) -> None:
        super().__init__()
        self.size = size

    def seen(self, key: tuple[str, tuple[Any, ...]] | None) -> bool:
        if key is None or key not in self:
            return False
        self.move_to_end(key)
        return True

    def keep(self, key: tuple[str, tuple[Any, ...]] | None) -> None:
        if key is not None:
            self[key] = None
            while len(self) > self.size:
                self.popitem(last=False)

    @staticmethod
    def key(query: str, variables: dict[str, Any] | None) -> tuple[str, tuple[Any, ...]] | None:
        """The key of a query and its variables, or None when the values are not a few
        strings, numbers, booleans or nulls (or lists of them)."""
        items: list[Any] = []
        count = 0
        for name, value in sorted((variables or {}).items()):
            values = value if isinstance(value, list) else [value]
            count += len(values)
            if count > _SMALL_VALUES or not all(_plain(v) for v in values):
                return None
            # The type is part of the key: 1, 1.0 and True are equal in Python, not in GraphQL.
            frozen = tuple((type(v).__name__, v) for v in values)
            items.append((name, isinstance(value, list), frozen))
        return query, tuple(items)


def _plain(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= _SMALL_TEXT
    return value is None or isinstance(value, bool | int | float)


def _validated(
    schema: Any, document: DocumentNode, rules: tuple[Any, ...], hide_suggestions: bool
) -> list[GraphQLError]:
    # Strawberry's validate_document (its own two rules added), with graphql-core's switch
    # for "Did you mean ...?" suggestions, rather than cutting them out of the messages after.
    rules = (*rules, MaybeNullValidationRule, OneOfInputValidationRule)
    return validate(schema, document, rules, hide_suggestions=hide_suggestions)


class QueryLimits(SchemaExtension):
    """Parses with the token limit and validates (both off the loop for a new text), then
    refuses documents over the depth, alias and cost limits, which depend on variables (a
    `$count`) and are measured on every request (walked once per text and small set of
    variable values within them, `WithinLimits`)."""

    def __init__(
        self,
        limits: Limits,
        documents: DocumentCache,
        measured: WithinLimits | None = None,
        refused: Refused | None = None,
    ) -> None:
        self.limits = limits
        self.documents = documents
        self.measured = WithinLimits() if measured is None else measured
        self.refused = Refused() if refused is None else refused
        self.length: int | None = None  # set when the query text is over the limit
        # Set when the parser stopped at its limit, or to the errors of a text refused before.
        self.tokens: GraphQLError | list[GraphQLError] | None = None
        self.fresh = False  # the document was parsed for this request, not taken from cache

    async def on_operation(self) -> AsyncIterator[None]:
        self.execution_context.parse_options["max_tokens"] = self.limits.max_tokens
        yield

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        query = context.query
        if query is not None and len(query) > self.limits.max_length:
            # Not parsed at all: a stand-in document carries the refusal to on_validate.
            self.length = len(query)
            context.graphql_document = _stand_in(context)
        elif query is not None and (many := _fragments(query)) > MAX_FRAGMENTS:
            # Counted in the text, so not even parsed (a 40 KB text: about 0.1 s of parsing).
            self.tokens, context.graphql_document = _too_many_fragments(many), _stand_in(context)
        elif query is not None and context.graphql_document is None:
            document = self.documents.get_document(query)
            refused = None if document is not None else self.refused.errors(query)
            if refused is not None:
                self.tokens, document = refused, _stand_in(context)  # refused as before
            elif document is None and NEW_TEXTS.left() <= 0:
                self.tokens, document = _busy(), _stand_in(context)  # transient: not kept
            elif document is None:
                found = await _off_loop(_parse, query, self.limits.max_tokens)
                if isinstance(found, GraphQLError):
                    # Over the token limit, refused as such; any other syntax error as it is.
                    self.tokens = found
                    document = _stand_in(context)
                else:
                    document, self.fresh = found, found is not None
            context.graphql_document = document
        if self.length is not None or self.tokens is not None:
            unparsed(context)  # a stand-in: no operation of the caller's to record
        yield

    async def _validate(self, context: Any, document: DocumentNode) -> list[GraphQLError]:
        """The schema's rules on a newly parsed document, off the loop; refusals remembered."""
        if NEW_TEXTS.left() <= 0:
            return [_busy()]  # transient: not remembered
        fragments = sum(isinstance(d, FragmentDefinitionNode) for d in document.definitions)
        if fragments > MAX_FRAGMENTS:  # written so that the text's count missed them
            errors = [_too_many_fragments(fragments)]
        else:
            rules = context.validation_rules + (
                () if self.limits.introspection else (NoSchemaIntrospectionCustomRule,)
            )
            # Suggestions reveal the schema: hidden where introspection is (production).
            hidden = not self.limits.introspection
            errors = await _off_loop(_validated, context.schema._schema, document, rules, hidden)
            if any(isinstance(e, ValidationAbortedError) for e in errors):
                errors = [
                    rejected(
                        "field comparisons",
                        overlap.MAX_COMPLEXITY_BUDGET,
                        f"more than {overlap.MAX_COMPLEXITY_BUDGET}",
                        "the document repeats a field or fragment too often to check that "
                        "its fields merge: select each field once per selection",
                    )
                ]
        if errors:
            self.refused.keep(context.query, errors)
            return self.refused.errors(context.query) or errors
        return errors

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if self.length is not None:
            context.pre_execution_errors = [
                rejected("query length", self.limits.max_length, self.length)
            ]
        elif self.tokens is not None:
            context.pre_execution_errors = (
                self.tokens if isinstance(self.tokens, list) else [self.tokens]
            )
        elif document is not None and context.query is not None:
            errors: list[GraphQLError] = []
            if self.fresh:
                errors = await self._validate(context, document)
                if not errors:
                    self.documents.keep(context.query, document)
            if not errors and not _only_mutations(document):
                # A mutation's variables are coerced in a worker thread (api/graphql/execution.py):
                # walking a 50,000-instance input here would hold the loop ~60 ms for nothing.
                errors = variable_errors(context.variables)
            if not errors:
                key = WithinLimits.key(context.query, context.variables)
                if not self.measured.seen(key):
                    errors = limit_errors(self.limits, document, context.variables or {})
                    if not errors:
                        self.measured.keep(key)
            if not errors and _subscription_over_http(document, context.context):
                errors = [
                    GraphQLError(
                        "subscriptions are served over a WebSocket "
                        "(graphql-transport-ws) at /graphql, not over HTTP"
                    )
                ]
            context.pre_execution_errors = list(errors)  # Strawberry then skips validating
        yield


def _fragments(text: str) -> int:
    """Fragment definitions written in `text`: the word counted first (a substring count, 20
    times cheaper than the expression on a 40 KB text, which every request pays), the
    definitions only when the word alone could pass the cap."""
    if text.count("fragment") <= MAX_FRAGMENTS:
        return 0
    return len(_FRAGMENT.findall(text))


def _too_many_fragments(count: int) -> GraphQLError:
    return rejected(
        "fragment definitions",
        MAX_FRAGMENTS,
        count,
        "define each fragment once and spread it where it is needed",
    )


async def _off_loop(work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`work` on the pool; its thread's CPU time is charged to NEW_TEXTS."""

    def timed() -> tuple[Any, float]:
        started = time.thread_time()
        result = work(*args, **kwargs)
        return result, time.thread_time() - started

    result, seconds = await asyncio.get_running_loop().run_in_executor(_POOL, timed)
    NEW_TEXTS.charge(seconds)
    return result


_STAND_IN = parse("{ __typename }")
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,127}")


def _stand_in(context: Any) -> DocumentNode:
    """The document that carries a refusal to on_validate in place of the unparsed text: one
    operation named as the caller's operationName, so that Strawberry, which looks the name up
    first, does not answer "Unknown operation" instead of the refusal (found black-box)."""
    name = getattr(context, "_provided_operation_name", None)
    if isinstance(name, str) and _NAME.fullmatch(name):
        return _named_stand_in(name)
    return _STAND_IN


@functools.lru_cache(maxsize=64)
def _named_stand_in(name: str) -> DocumentNode:
    return parse(f"query {name} {{ __typename }}")


def _parse(query: str, max_tokens: int) -> DocumentNode | GraphQLError | None:
    """The document of `query`; its QUERY_REJECTED error when it is over the token limit, its
    syntax error on any other."""
    try:
        return _unlinked(parse(query, max_tokens=max_tokens))
    except GraphQLError as error:
        # Its own syntax error otherwise: Strawberry, given no document, would parse the
        # text again to report it, on the event loop (0.1 s for a 27 KB text; found after
        # the black-box rounds).
        return token_rejection(query, error, max_tokens) or error


def _unlinked(document: DocumentNode) -> DocumentNode:
    """graphql-core links a document's tokens both ways (`prev`, `next`), which makes every
    parsed document one reference cycle of thousands of objects: freed only by the cyclic
    collector, whose passes then held every thread (and the event loop) for up to 0.2 s while
    clients sent new large documents (found black-box). Nothing reads the links after parsing
    (errors locate themselves by position); cut, the document is a tree that reference
    counting frees, and the tokens no node starts or ends with go at once."""
    token = document.loc.start_token if document.loc is not None else None
    while token is not None:
        token.prev, token.next, token = None, None, token.next
    return document


def _only_mutations(document: Any) -> bool:
    return all(
        d.operation.value == "mutation"
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    )


def _subscription_over_http(document: Any, context: Any) -> bool:
    request = getattr(context, "request", None)
    over_http = getattr(request, "scope", {}).get("type") == "http"
    return over_http and any(
        isinstance(d, OperationDefinitionNode) and d.operation.value == "subscription"
        for d in document.definitions
    )


class QueryLimitsFactory:
    """Makes each operation's QueryLimits; they share one document cache."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.documents = DocumentCache()
        self.measured = WithinLimits()
        self.refused = Refused()

    def __call__(self) -> QueryLimits:
        return QueryLimits(self.limits, self.documents, self.measured, self.refused)


def query_limits(limits: Limits) -> QueryLimitsFactory:
    """A factory of QueryLimits extensions sharing one document cache."""
    return QueryLimitsFactory(limits)
