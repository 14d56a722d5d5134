"""Rule violations as FHIR OperationOutcome issues, and the error every store layer raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The machine-readable codes of the GraphQL error contract (README "Errors").
BAD_USER_INPUT = "BAD_USER_INPUT"
NOT_FOUND = "NOT_FOUND"
VERSION_CONFLICT = "VERSION_CONFLICT"
INVALID_STATUS_TRANSITION = "INVALID_STATUS_TRANSITION"
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
# A subscription's `after` names events that can no longer be replayed: refetch, resubscribe.
RESUME_UNAVAILABLE = "RESUME_UNAVAILABLE"

_FHIR_ISSUE_CODE = {
    BAD_USER_INPUT: "invalid",
    NOT_FOUND: "not-found",
    VERSION_CONFLICT: "conflict",
    INVALID_STATUS_TRANSITION: "business-rule",
    STORE_UNAVAILABLE: "transient",
    RESUME_UNAVAILABLE: "not-found",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One violated rule: where (a FHIRPath expression) and what, in plain words."""

    expression: str
    diagnostics: str
    code: str = "invalid"  # the FHIR issue-type code

    def to_fhir(self) -> dict[str, Any]:
        return {"severity": "error", "code": self.code, "diagnostics": self.diagnostics,
                "expression": [self.expression]}


class StoreError(Exception):
    """A refused operation. `code` is the contract code; `issues` say what and where."""

    def __init__(self, code: str, issues: list[Issue]) -> None:
        self.code = code
        self.issues = issues
        super().__init__(self.message)

    @property
    def message(self) -> str:
        first = self.issues[0]
        return f"{first.expression}: {first.diagnostics}{more_issues(len(self.issues) - 1)}"

    def outcome(self) -> dict[str, Any]:
        return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in self.issues]}


def more_issues(count: int) -> str:
    """The tail of a message that shows only the first of `count` + 1 issues: all of them
    are in the OperationOutcome."""
    if count <= 0:
        return ""
    return f" (and {count} more {'issue' if count == 1 else 'issues'}, listed in the " \
        "OperationOutcome)"


def fail(code: str, expression: str, diagnostics: str) -> StoreError:
    """A StoreError with one issue, its FHIR issue type chosen from the contract code."""
    return StoreError(code, [Issue(expression, diagnostics, _FHIR_ISSUE_CODE[code])])


def invalid(issues: list[Issue]) -> StoreError:
    return StoreError(BAD_USER_INPUT, issues)


class DuplicateUid(StoreError):
    """A write refused because another live study carries its Study Instance UID. `holder` is
    that study's id: the access gate names it only to a caller who may read that study."""

    def __init__(self, expression: str, uid: str, holder: str) -> None:
        super().__init__(BAD_USER_INPUT, [Issue(expression, f"Study Instance UID {uid} is "
                         "already carried by another study; a DICOM study is indexed once "
                         "(update that study instead)", "duplicate")])
        self.holder = holder

    def naming_holder(self) -> StoreError:
        """The same refusal, naming the study that holds the UID."""
        issue = self.issues[0]
        return StoreError(self.code, [Issue(issue.expression, issue.diagnostics.replace(
            "another study", f"ImagingStudy/{self.holder}", 1), issue.code)])
