"""One audit record per GraphQL operation, shaped as a FHIR AuditEvent, on the
`imaging.audit` logger: when, who, which operation, which studies and patients, and the outcome.
Nothing else about a patient is written."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError

from api.errors import REQUEST_ERRORS
from store.fhir.outcome import BAD_REQUEST, BAD_USER_INPUT, CLIENT_CODES, INTERNAL_SERVER_ERROR

audit_log = logging.getLogger("imaging.audit")
OUTCOME = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
_ACTIONS = {"ImagingStudyCreate": "C", "ImagingStudyDelete": "D", "ImagingStudyImport": "E"}


# (operation type, root field names) of the operation that runs, given Strawberry's execution
# context: `api.graphql.selection.operation_fields`, which reads selections as the executor
# does. It is a layer above this one, so whoever installs AuditLog hands it in.
RootFields = Callable[[Any], tuple[str, list[str]]]


CANCELLED = "CANCELLED"  # the outcome of a query or mutation its client left before its answer
# Whether the current HTTP request's operation has its record (set by AuditLog): a request
# refused without one gets a record of its refusal (`refused`).
operation_audited: ContextVar[bool] = ContextVar("operation_audited", default=False)
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,127}")


def _coded(code: str) -> list[Any]:
    return [GraphQLError(code, extensions={"code": code})]


def raised_errors(raised: BaseException | None, kind: str = "unknown") -> list[Any] | None:
    """The errors to record for an operation left by an exception; None when it was not. An
    operation closed by its transport (GeneratorExit, cancellation) is CANCELLED unless it is
    a subscription, whose client ends it so (its outcome is then what it answered)."""
    if raised is None:
        return None
    if not isinstance(raised, Exception):
        return None if kind == "subscription" else _coded(CANCELLED)
    if isinstance(raised, CannotGetOperationTypeError):
        code = BAD_USER_INPUT  # the codes the HTTP view answers them with (api/http/view.py)
    elif isinstance(raised, REQUEST_ERRORS):
        code = BAD_REQUEST
    else:
        code = INTERNAL_SERVER_ERROR
    return _coded(getattr(raised, "code", code))


def ran(context: Any, raised: BaseException | None) -> bool:
    """Whether an operation of the request ran: not when the request was refused before
    execution (parse, validation and limits errors answer without `data` and without paths),
    nor when Strawberry could not pick or allow the operation."""
    if isinstance(raised, REQUEST_ERRORS):
        return False
    result = context.result
    if result is None:
        return not context.pre_execution_errors
    errors = getattr(result, "errors", None) or ()
    return (
        getattr(result, "data", None) is not None
        or not errors
        or any(getattr(error, "path", None) for error in errors)
    )


def name_of(name: Any) -> str | None:
    """A caller's operation name as the log may hold it: a GraphQL name of at most 128
    characters (an operationName is free text until it names an operation; a name in a
    document may be 100,000 characters long)."""
    return name if isinstance(name, str) and _NAME.fullmatch(name) else None


def refused(operation: Any, context: Any, code: str) -> dict[str, Any]:
    """The record of a request refused before any operation of it ran (its shape, a mutation
    sent to one study's endpoint, the operations a socket may carry at once): category
    `graphql unknown`, action E, its operationName when it is a GraphQL name, else
    `unparsed`. Written on the audit log; returned for the caller's metrics."""
    name = name_of(operation) or "unparsed"
    event = record(name, "unknown", [], context, _coded(code))
    audit_log.info("unknown %s %s", name, code, extra={"audit": event, "duration_ms": 0.0})
    return event


@contextlib.contextmanager
def ended(then: Callable[[BaseException | None], None]) -> Iterator[None]:
    """Calls `then` with what left the block, None or the exception, however it was left: an
    operation's hook is also left early, by an exception (a request Strawberry cannot run),
    or by GeneratorExit or cancellation when the transport closes a WebSocket operation's
    stream (a refusal sent, a subscription completed, its socket gone), which never gets
    past the hook's yield."""
    raised: BaseException | None = None
    try:
        yield
    except BaseException as error:
        raised = error
        raise
    finally:
        then(raised)


def outcome_of(errors: list[Any] | None) -> tuple[str, str]:
    """(AuditEvent outcome code, contract code) of an operation's errors."""
    codes = [(e.extensions or {}).get("code", INTERNAL_SERVER_ERROR) for e in errors or ()]
    if not codes:
        return "0", "OK"
    serious = [c for c in codes if c not in CLIENT_CODES and c != CANCELLED]
    return ("8", serious[0]) if serious else ("4", codes[0])


# (study id, patient reference) of every study the current operation touched. Per operation,
# not per context: a WebSocket keeps one context for all the operations it carries.
touched_by_operation: ContextVar[list[tuple[str, str | None]] | None] = ContextVar(
    "touched_by_operation", default=None
)


def record(
    operation: str,
    kind: str,
    fields: list[str],
    context: Any,
    errors: list[Any] | None,
    touched: list[tuple[str, str | None]] | None = None,
) -> dict[str, Any]:
    access = getattr(context, "access", None)
    touched = touched or []
    code, contract = outcome_of(errors)
    if kind == "mutation":
        action = next((_ACTIONS[f] for f in fields if f in _ACTIONS), "U")
    else:  # an unparsed text asked for nothing the audit can name: an execution, not a read
        action = "E" if kind == "unknown" else "R"
    agents = [
        {
            "type": {"text": "user"},
            "requestor": True,
            "who": {"identifier": {"value": getattr(access, "subject", None) or "anonymous"}},
        }
    ]
    if client := getattr(access, "client", None):
        agents.append(
            {
                "type": {"text": "client"},
                "requestor": False,
                "who": {"identifier": {"value": client}},
            }
        )
    studies = sorted({study for study, _ in touched})
    patients = sorted({patient for _, patient in touched if patient})
    return {
        "resourceType": "AuditEvent",
        "category": [{"text": f"graphql {kind}"}],
        "code": {"text": operation},
        "action": action,
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": {"code": {"system": OUTCOME, "code": code}, "detail": [{"text": contract}]},
        "agent": agents,
        "source": {"observer": {"display": "imaging-api"}},
        "entity": [{"what": {"reference": f"ImagingStudy/{s}"}} for s in studies]
        + [{"what": {"reference": p}, "role": {"text": "patient"}} for p in patients],
    }


def delivered(context: Any, operation: str, study_id: str, subject: str | None) -> None:
    """The audit record of one subscription event given to one subscriber: a disclosure, so
    it is recorded when it happens, not when the subscription (which may run for days) ends.
    The record never fails the delivery."""
    try:
        event = record(operation, "subscription", [operation], context, None, [(study_id, subject)])
        event["category"] = [{"text": "graphql subscription event"}]
        audit_log.info("subscription event %s", operation, extra={"audit": event})
    except Exception:
        audit_log.exception("audit record of a %s event incomplete", operation)


class AuditLog(SchemaExtension):
    """Writes the audit record of each operation when it completes, errors included; its
    root fields as `root_fields` reads them (see RootFields)."""

    def __init__(self, root_fields: RootFields) -> None:
        self.root_fields = root_fields

    def on_operation(self) -> Iterator[None]:
        start = time.perf_counter()
        touched: list[tuple[str, str | None]] = []
        token = touched_by_operation.set(touched)

        def write(raised: BaseException | None) -> None:
            with contextlib.suppress(ValueError):  # left from another context
                touched_by_operation.reset(token)
            self._write(start, touched, raised)

        with ended(write):
            yield

    def _write(
        self, start: float, touched: list[tuple[str, str | None]], raised: BaseException | None
    ) -> None:
        context = self.execution_context
        did_run = ran(context, raised)
        kind, fields = self.root_fields(context) if did_run else ("unknown", [])
        result = context.result
        errors = (
            getattr(result, "errors", None) if result is not None else context.pre_execution_errors
        ) or raised_errors(raised, kind)
        operation_audited.set(True)
        # The name of the operation that ran; of a request where none did, only the name the
        # caller gave (Strawberry fills one in from the document's first operation, and a
        # text refused before is not parsed again).
        if did_run and kind != "unknown":
            named = name_of(context.operation_name)
        else:
            named = name_of(getattr(context, "_provided_operation_name", None))
        operation = named or ",".join(fields) or "unparsed"
        try:
            event = record(operation, kind, fields, context.context, errors, touched)
        except Exception:  # the audit never fails a request whose writes are committed
            audit_log.exception("audit record of %s %s incomplete", kind, operation)
            event = record(operation, kind, fields, None, errors)
            event["outcome"]["detail"].append({"text": "audit-incomplete"})
        audit_log.info(
            "%s %s %s",
            kind,
            operation,
            event["outcome"]["detail"][0]["text"],
            extra={"audit": event, "duration_ms": round((time.perf_counter() - start) * 1000, 1)},
        )
