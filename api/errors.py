"""The one error mapper: every GraphQL error leaves with `extensions.code` and
`extensions.resource` (a FHIR OperationOutcome). Store errors keep their precise text; anything
unexpected is masked to INTERNAL_SERVER_ERROR with a request id that points at the log."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, print_ast
from strawberry.extensions import SchemaExtension

from api.graphql.limits import token_rejection
from store.fhir.outcome import BAD_USER_INPUT, StoreError

log = logging.getLogger("imaging.api")
INTERNAL = "INTERNAL_SERVER_ERROR"
# Refusals of a request that is not a GraphQL request this server runs (api/http/answers.py):
# the HTTP status says which rule (400, 405, 406, 408, 413, 415).
BAD_REQUEST = "BAD_REQUEST"
# Apollo's automatic persisted queries: its link reads these codes (or the messages) and sends
# the request again with its query (not found) or without the hash (not supported).
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"


def _outcome(code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def refusal(message: str, code: str, issue: str, diagnostics: str | None = None
            ) -> dict[str, Any]:
    """The GraphQL response body of a request refused before it ran: one error in contract
    form, no `data`. `issue` is the FHIR issue type; `diagnostics` defaults to the message."""
    return {"errors": [{"message": message, "extensions": {
        "code": code, "resource": _outcome(issue, diagnostics or message)}}]}


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
    root = ("ImagingStudy" if variables.get(variable["var"]) == "ImagingStudyInput"
            else f"${variable['var']}")
    return f"{root}{variable['path']}.{unknown['field']}"


# graphql-core ends some messages with the offending value ("..., found: {...}" or "...?
# Found: {...}"): cut, since it can be a whole batch, and is printed as a Python value.
_ECHO = re.compile(r"[,;.?]?\s+found:", re.IGNORECASE)
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def map_error(error: GraphQLError, variables: dict[str, str] | None = None,
              production: bool = False) -> GraphQLError:
    """The contract form of one error. `variables` maps variable names to their input types.
    In production, "Did you mean ...?" suggestions are cut: they reveal the schema."""
    original = error.original_error
    if error.extensions and "code" in error.extensions:
        return error  # already in contract form (a query limit)
    if (tokens := token_rejection(error.message)) is not None:
        return tokens
    if isinstance(original, StoreError):
        extensions = {"code": original.code, "resource": original.outcome()}
        message = original.message
    elif original is None or isinstance(original, GraphQLError):
        # Parse, validation and variable coercion errors: the request itself was wrong. The
        # echo of the offending value is cut: it can be a whole 10,000-instance batch.
        message = _ECHO.split(error.message)[0]
        if production:
            message = _SUGGESTION.sub("", message)
        expression = _input_expression(error.message, variables or {})
        extensions = {"code": BAD_USER_INPUT,
                      "resource": _outcome("invalid", message, expression)}
    else:
        request_id = uuid.uuid4().hex
        log.error("unexpected error, request id %s", request_id, exc_info=original)
        message = f"Internal server error (request id {request_id})"
        extensions = {"code": INTERNAL, "requestId": request_id,
                      "resource": _outcome("exception", message)}
    return GraphQLError(message, nodes=error.nodes, source=error.source,
                        positions=error.positions, path=error.path, extensions=extensions)


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
