"""The one error mapper: every GraphQL error leaves with `extensions.code` and
`extensions.resource` (a FHIR OperationOutcome). Store errors keep their precise text; anything
unexpected is masked to INTERNAL_SERVER_ERROR with a request id that points at the log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from store.fhir.outcome import BAD_USER_INPUT, StoreError

log = logging.getLogger("imaging.api")
INTERNAL = "INTERNAL_SERVER_ERROR"


def _outcome(code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def map_error(error: GraphQLError) -> GraphQLError:
    """The contract form of one error."""
    original = error.original_error
    if isinstance(original, StoreError):
        extensions = {"code": original.code, "resource": original.outcome()}
        message = original.message
    elif original is None:
        # Parse, validation and variable coercion errors: the request itself was wrong.
        extensions = {"code": BAD_USER_INPUT, "resource": _outcome("invalid", error.message)}
        message = error.message
    else:
        request_id = uuid.uuid4().hex
        log.error("unexpected error, request id %s", request_id, exc_info=original)
        message = f"Internal server error (request id {request_id})"
        extensions = {"code": INTERNAL, "requestId": request_id,
                      "resource": _outcome("exception", message)}
    return GraphQLError(message, nodes=error.nodes, source=error.source,
                        positions=error.positions, path=error.path, extensions=extensions)


class ErrorMapper(SchemaExtension):
    """Rewrites every error of an operation into the contract form (DESIGN.md section 4)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and getattr(result, "errors", None):
            result.errors = [map_error(e) for e in result.errors]
