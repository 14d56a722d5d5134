"""The one error mapper: every GraphQL error leaves with `extensions.code` and
`extensions.resource` (a FHIR OperationOutcome). Refusals (the store's, the access rules')
keep their precise text; anything unexpected is masked to INTERNAL_SERVER_ERROR with a request
id that points at the log. The codes and the OperationOutcome builder live in
store/fhir/outcome.py, shared with the store."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, print_ast
from strawberry.extensions import SchemaExtension

from store.fhir.outcome import (
    BAD_USER_INPUT,
    INTERNAL_SERVER_ERROR,
    ISSUE_TYPE,
    Issue,
    OutcomeError,
    outcome,
)

log = logging.getLogger("imaging.api")


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


_VARIABLE = re.compile(r"Variable '\$(?P<var>\w+)' has invalid value at (?P<path>[\w.\[\]]*)")
_UNKNOWN = re.compile(r"type '(?P<type>\w+)Input' not to include unknown field '(?P<field>\w+)'")


def _fhir_root(input_type: str) -> str:
    """ImagingStudySeriesInstance -> ImagingStudy.series.instance; datatypes stay as named."""
    parts = re.findall(r"[A-Z][a-z]+", input_type)
    if input_type.startswith("ImagingStudy") and "".join(parts) == input_type:
        return ".".join(["ImagingStudy", *(p.lower() for p in parts[2:])])
    return input_type


def _input_expression(message: str, variables: dict[str, str]) -> str | None:
    """Where a refused input element sits: a FHIRPath when the input was a whole study."""
    unknown = _UNKNOWN.search(message)
    if unknown is None:
        return None
    variable = _VARIABLE.search(message)
    if variable is None:
        return f"{_fhir_root(unknown['type'])}.{unknown['field']}"
    root = (
        "ImagingStudy"
        if variables.get(variable["var"]) == "ImagingStudyInput"
        else f"${variable['var']}"
    )
    return f"{root}{variable['path']}.{unknown['field']}"


# graphql-core ends some messages with the offending value ("..., found: {...}" or "...?
# Found: {...}"): cut, since it can be a whole batch, and is printed as a Python value.
_ECHO = re.compile(r"[,;.?]?\s+found:", re.IGNORECASE)
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def map_error(
    error: GraphQLError, variables: dict[str, str] | None = None, production: bool = False
) -> GraphQLError:
    """The contract form of one error. `variables` maps variable names to their input types.
    In production, "Did you mean ...?" suggestions are cut: they reveal the schema."""
    original = error.original_error
    if error.extensions and "code" in error.extensions:
        return error  # already in contract form (a query limit)
    if isinstance(original, OutcomeError):
        extensions = {"code": original.code, "resource": original.outcome()}
        message = original.message
    elif original is None or isinstance(original, GraphQLError):
        # Parse, validation and variable coercion errors: the request itself was wrong. The
        # echo of the offending value is cut: it can be a whole 10,000-instance batch.
        message = _ECHO.split(error.message)[0]
        if production:
            message = _SUGGESTION.sub("", message)
        expression = _input_expression(error.message, variables or {})
        extensions = {
            "code": BAD_USER_INPUT,
            "resource": outcome([Issue(expression, message, "invalid")]),
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


class ErrorMapper(SchemaExtension):
    """Rewrites every error of an operation into the contract form (README "Errors")."""

    def __init__(self, production: bool = False) -> None:
        self.production = production

    def on_operation(self) -> Iterator[None]:
        yield
        self._map(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each result of a subscription, before it is sent."""
        self._map(result)
        yield

    def _map(self, result: Any) -> None:
        if result is not None and getattr(result, "errors", None):
            variables = _variable_types(self.execution_context.graphql_document)
            # Idempotent: an error already in contract form (it has a code) stays as it is.
            result.errors = [map_error(e, variables, self.production) for e in result.errors]


def _variable_types(document: DocumentNode | None) -> dict[str, str]:
    types: dict[str, str] = {}
    for definition in document.definitions if document else ():
        if isinstance(definition, OperationDefinitionNode):
            for variable in definition.variable_definitions or ():
                types[variable.variable.name.value] = print_ast(variable.type).rstrip("!")
    return types
