"""The error contract's one home: every code a client sees, the OperationOutcome builder, and
the errors that carry both (the store's own, StoreError; the api raises its own kinds)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The machine-readable codes of the GraphQL error contract (README "Errors"), `extensions.code`.
BAD_USER_INPUT = "BAD_USER_INPUT"
NOT_FOUND = "NOT_FOUND"
VERSION_CONFLICT = "VERSION_CONFLICT"
INVALID_STATUS_TRANSITION = "INVALID_STATUS_TRANSITION"
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
# A subscription's `after` names events that can no longer be replayed: refetch, resubscribe.
RESUME_UNAVAILABLE = "RESUME_UNAVAILABLE"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
# A query over one of the limits (length, tokens, depth, aliases, cost, time budget).
QUERY_REJECTED = "QUERY_REJECTED"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
# Refusals of a request that is not a GraphQL request this server runs (api/http/answers.py):
# the HTTP status says which rule (400, 404, 405, 406, 408, 413, 415).
BAD_REQUEST = "BAD_REQUEST"
# Apollo's automatic persisted queries: its link reads these codes (or the messages) and sends
# the request again with its query (not found) or without the hash (not supported).
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"

# The codes that say the caller's request was refused, not that the service failed (the audit
# record's outcome: 4 "minor failure" for these, 8 "serious failure" for the others).
CLIENT_CODES = frozenset(
    {
        BAD_USER_INPUT,
        NOT_FOUND,
        VERSION_CONFLICT,
        INVALID_STATUS_TRANSITION,
        UNAUTHENTICATED,
        FORBIDDEN,
        QUERY_REJECTED,
        RESUME_UNAVAILABLE,
        BAD_REQUEST,
        PERSISTED_QUERY_NOT_FOUND,
        PERSISTED_QUERY_NOT_SUPPORTED,
    }
)

# The FHIR issue type (IssueType value set) of a one-issue error of each code.
ISSUE_TYPE = {
    BAD_USER_INPUT: "invalid",
    NOT_FOUND: "not-found",
    VERSION_CONFLICT: "conflict",
    INVALID_STATUS_TRANSITION: "business-rule",
    STORE_UNAVAILABLE: "transient",
    RESUME_UNAVAILABLE: "not-found",
    UNAUTHENTICATED: "login",
    FORBIDDEN: "security",
    QUERY_REJECTED: "too-costly",
    INTERNAL_SERVER_ERROR: "exception",
    BAD_REQUEST: "invalid",
    PERSISTED_QUERY_NOT_FOUND: "not-found",
    PERSISTED_QUERY_NOT_SUPPORTED: "not-supported",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One violated rule: where (a FHIRPath expression, None when it is the request as a whole)
    and what, in plain words."""

    expression: str | None
    diagnostics: str
    code: str = "invalid"  # the FHIR issue-type code

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": "error",
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """The one OperationOutcome builder: `extensions.resource` of every error a client sees."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class OutcomeError(Exception):
    """A refused operation: `code` is the contract code; `issues` say what and where."""

    def __init__(self, code: str, issues: list[Issue]) -> None:
        self.code = code
        self.issues = issues
        super().__init__(self.message)

    @property
    def message(self) -> str:
        first = self.issues[0]
        where = f"{first.expression}: " if first.expression else ""
        return f"{where}{first.diagnostics}{more_issues(len(self.issues) - 1)}"

    def outcome(self) -> dict[str, Any]:
        return outcome(self.issues)


class StoreError(OutcomeError):
    """A refusal of the store: its rules, its versions, its availability."""


def more_issues(count: int) -> str:
    """The tail of a message that shows only the first of `count` + 1 issues: all of them
    are in the OperationOutcome."""
    if count <= 0:
        return ""
    return (
        f" (and {count} more {'issue' if count == 1 else 'issues'}, listed in the OperationOutcome)"
    )


def fail(code: str, expression: str, diagnostics: str) -> StoreError:
    """A StoreError with one issue, its FHIR issue type chosen from the contract code."""
    return StoreError(code, [Issue(expression, diagnostics, ISSUE_TYPE[code])])


def invalid(issues: list[Issue]) -> StoreError:
    return StoreError(BAD_USER_INPUT, issues)


class DuplicateUid(StoreError):
    """A write refused because another live study carries its Study Instance UID. `holder` is
    that study's id: the access gate names it only to a caller who may read that study."""

    def __init__(self, expression: str, uid: str, holder: str) -> None:
        super().__init__(
            BAD_USER_INPUT,
            [
                Issue(
                    expression,
                    f"Study Instance UID {uid} is "
                    "already carried by another study; a DICOM study is indexed once "
                    "(update that study instead)",
                    "duplicate",
                )
            ],
        )
        self.holder = holder

    def naming_holder(self) -> StoreError:
        """The same refusal, naming the study that holds the UID."""
        issue = self.issues[0]
        return StoreError(
            self.code,
            [
                Issue(
                    issue.expression,
                    issue.diagnostics.replace("another study", f"ImagingStudy/{self.holder}", 1),
                    issue.code,
                )
            ],
        )
