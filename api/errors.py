"""The one error mapper: every GraphQL error leaves with `extensions.code` and
`extensions.resource` (a FHIR OperationOutcome). Refusals (the store's, the access rules')
keep their precise text; anything unexpected is masked to INTERNAL_SERVER_ERROR with a request
id that points at the log. The codes and the OperationOutcome builder live in
store/fhir/outcome.py, shared with the store."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import GraphQLError, ValuesOfCorrectTypeRule, VariableDefinitionNode
from graphql.pyutils import Undefined
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from api.input_errors import InputValuesRule, variable_errors
from store.fhir.outcome import (
    BAD_USER_INPUT,
    INTERNAL_SERVER_ERROR,
    ISSUE_TYPE,
    Issue,
    OutcomeError,
    outcome,
)

log = logging.getLogger("imaging.api")
# What Strawberry raises for a request it cannot run (no query, an operationName naming no
# operation, a mutation over GET): the caller's error, whichever transport carried it.
REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


class AccessError(OutcomeError):
    """A refusal of the access rules: UNAUTHENTICATED (no valid token) or FORBIDDEN (a token
    without the scope, or confined to another patient). Not a StoreError: the store never
    decides who may do what."""


def denied(code: str, message: str, expression: str = "Authorization") -> AccessError:
    """An AccessError of one issue; `expression` is what was refused (the token by default)."""
    return AccessError(code, [Issue(expression, message, ISSUE_TYPE[code])])


def refusal(message: str, code: str, issue: str, diagnostics: str | None = None) -> dict[str, Any]:
    """The GraphQL response body of a request refused before it ran: one error in contract
    form, no `data`. `issue` is the FHIR issue type; `diagnostics` defaults to the message."""
    return {
        "errors": [
            {
                "message": message,
                "extensions": {
                    "code": code,
                    "resource": outcome([Issue(None, diagnostics or message, issue)]),
                },
            }
        ]
    }


def map_error(error: GraphQLError) -> GraphQLError:
    """The contract form of one error."""
    original = error.original_error
    if error.extensions and "code" in error.extensions:
        return error  # already in contract form (a query limit, an input value's problem)
    if isinstance(original, OutcomeError):
        extensions = {"code": original.code, "resource": original.outcome()}
        message = original.message
    elif original is None or isinstance(original, (GraphQLError, *REQUEST_ERRORS)):
        # Parse, validation and variable errors: the request itself was wrong. Those about an
        # input's value are built from structure already (api/input_errors.py); these name no
        # value, and a variable's error names it in `expression`.
        message = error.message
        extensions = {
            "code": BAD_USER_INPUT,
            "resource": outcome([Issue(_variable_named(error), message, "invalid")]),
        }
    else:
        request_id = uuid.uuid4().hex
        log.error("unexpected error, request id %s", request_id, exc_info=original)
        message = f"Internal server error (request id {request_id})"
        extensions = {
            "code": INTERNAL_SERVER_ERROR,
            "requestId": request_id,
            "resource": outcome([Issue(None, message, "exception")]),
        }
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def _variable_of(error: GraphQLError) -> VariableDefinitionNode | None:
    """The variable definition graphql-core refused a value of, if that is the error."""
    node = error.nodes[0] if error.nodes else None
    return node if isinstance(node, VariableDefinitionNode) else None


def _variable_named(error: GraphQLError) -> str | None:
    variable = _variable_of(error)
    return None if variable is None else f"${variable.variable.name.value}"


class ErrorMapper(SchemaExtension):
    """Rewrites every error of an operation into the contract form (README "Errors"); has the
    literal input values of a document checked by InputValuesRule, which reports in that form."""

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context
        context.validation_rules = tuple(
            InputValuesRule if rule is ValuesOfCorrectTypeRule else rule
            for rule in context.validation_rules
        )
        yield
        result = context.result
        errors: list[GraphQLError] = list(getattr(result, "errors", None) or ())
        if result is not None and errors:
            if any(_refused_value(e) for e in errors):
                # Off the loop: the values walked again can be a 50,000-instance study.
                errors = await asyncio.to_thread(self._with_value_errors, errors)
            result.errors = [map_error(e) for e in errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each result of a subscription, before it is sent (its refused variables among them:
        a subscription's arguments are scalars, walked in no time)."""
        errors: list[GraphQLError] = list(getattr(result, "errors", None) or ())
        if result is not None and errors:
            if any(_refused_value(e) for e in errors):
                errors = self._with_value_errors(errors)
            # Idempotent: an error already in contract form (it has a code) stays as it is.
            result.errors = [map_error(e) for e in errors]
        yield

    def _with_value_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        """graphql-core's errors for refused variable values, each variable's replaced by the
        problems its value has, built from structure (api/input_errors.py)."""
        context = self.execution_context
        values = context.variables or {}
        done: set[str] = set()
        mapped: list[GraphQLError] = []
        for error in errors:
            variable = _variable_of(error) if _refused_value(error) else None
            if variable is None:
                mapped.append(error)
                continue
            name = variable.variable.name.value
            if name in done:
                continue  # its problems are in already, found by one walk
            done.add(name)
            found = variable_errors(context.schema._schema, variable, values.get(name, Undefined))
            mapped += found or [
                GraphQLError(f"Variable '${name}' has an invalid value.", nodes=error.nodes)
            ]
        return mapped


def _refused_value(error: GraphQLError) -> bool:
    """An error graphql-core made refusing a variable's value: it wraps the value's problem."""
    return _variable_of(error) is not None and isinstance(error.original_error, GraphQLError)
