"""FHIR JSON in: single ImagingStudy resources and Bundles, each entry matched and written by
the same rules as every other write, with one result per entry.

Matching: an entry that carries a Study Instance UID identifier (urn:dicom:uid) is matched on
it, so importing the same file twice changes nothing; otherwise an entry whose `id` exists
updates that study (under the lifecycle rules), and anything else is created (with its `id`
when it has one). A `transaction` Bundle is all-or-nothing; other Bundle types go entry by
entry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from store.fhir import edit
from store.fhir.definitions import DICOM_UID_SYSTEM
from store.fhir.identity import same_subject
from store.fhir.outcome import BAD_USER_INPUT, VERSION_CONFLICT, Issue, StoreError, fail
from store.fhir.primitives import CHECKS
from store.repository import Repository, same_content
from store.search import escape

log = logging.getLogger("imaging.import")
INTERNAL = "INTERNAL_SERVER_ERROR"
Study = dict[str, Any]
# (resource, scope letter, operation, new) -> the caller's patient, or raises: the access gate.
Admit = Callable[[Study, str, str, bool], Any]
BUNDLE_TYPES = ("collection", "batch", "transaction", "searchset")
CREATED, UPDATED, UNCHANGED, REJECTED = "created", "updated", "unchanged", "rejected"


@dataclass
class EntryResult:
    """What became of one imported resource."""

    index: int
    status: str
    id: str | None = None
    outcome: dict[str, Any] | None = None


@dataclass
class _Plan:
    index: int
    resource: Study
    status: str
    target: Study | None = None  # the stored study an update replaces
    error: StoreError | None = None


def study_uid_token(resource: Study) -> str | None:
    """The search token `urn:dicom:uid|<value>` of the first Study Instance UID identifier."""
    for identifier in resource.get("identifier") or ():
        if isinstance(identifier, dict) and identifier.get("system") == DICOM_UID_SYSTEM \
                and isinstance(identifier.get("value"), str):
            return f"{DICOM_UID_SYSTEM}|{escape(identifier['value'])}"
    return None


def study_uid_condition(resource: Study) -> str | None:
    """The If-None-Exist condition that finds a study by its Study Instance UID."""
    token = study_uid_token(resource)
    return None if token is None else "identifier=" + quote(token, safe=":|/")


def _rejected(index: int, error: StoreError) -> EntryResult:
    return EntryResult(index, REJECTED, None, error.outcome())


def entries(resource: Any) -> tuple[str | None, list[Any]]:
    """(Bundle type or None, the resources to import) of an import payload."""
    if not isinstance(resource, dict):
        raise fail(BAD_USER_INPUT, "resource", "must be a FHIR resource (a JSON object)")
    if resource.get("resourceType") != "Bundle":
        return None, [resource]
    kind = resource.get("type")
    if kind not in BUNDLE_TYPES:
        raise fail(BAD_USER_INPUT, "Bundle.type", f"'{kind}' Bundles are not imported; use "
                   f"one of {', '.join(BUNDLE_TYPES)}")
    items = resource.get("entry") or []
    if not isinstance(items, list):
        raise fail(BAD_USER_INPUT, "Bundle.entry", "must be a list")
    return kind, [e.get("resource") if isinstance(e, dict) else None for e in items]


class Importer:
    """Imports resources and Bundles into one repository."""

    def __init__(self, repo: Repository, dry_run: bool = False, attempts: int = 5,
                 admit: Admit | None = None) -> None:
        # The repository, or the caller-scoped store that wraps it: then matching sees only
        # the studies the caller may update, and `admit` checks each incoming resource.
        self.repo = repo
        self.dry_run = dry_run
        self._attempts = attempts
        self._admit = admit

    async def run(self, payload: Any) -> list[EntryResult]:
        kind, resources = entries(payload)
        if kind == "transaction":
            return await self._transaction(resources)
        return [await self._safely(index, resource) for index, resource in enumerate(resources)]

    async def _safely(self, index: int, resource: Any) -> EntryResult:
        """One entry of a batch: whatever happens, the entries before it stay reported as
        written, so a client never retries what was committed because of a later fault."""
        try:
            return await self._one(index, resource)
        except Exception:
            log.exception("import entry %d failed unexpectedly", index)
            return _rejected(index, StoreError(INTERNAL, [Issue(
                f"Bundle.entry[{index}]", "an unexpected error stopped this entry (see the "
                "server log); importing it again is safe", "exception")]))

    async def _one(self, index: int, resource: Any) -> EntryResult:
        for _ in range(self._attempts):
            plan = await self._plan(index, resource)
            if plan.error is not None:
                return _rejected(index, plan.error)
            if self.dry_run or plan.status == UNCHANGED:
                return self._result(plan)
            try:
                return await self._apply(plan)
            except StoreError as error:
                if error.code != VERSION_CONFLICT:
                    return _rejected(index, error)
                # Someone wrote the same study meanwhile: plan again against what is there.
        return _rejected(index, fail(VERSION_CONFLICT, "ImagingStudy", "the study kept "
                                     "changing during the import; retry"))

    async def _plan(self, index: int, resource: Any) -> _Plan:
        try:
            if not isinstance(resource, dict) or resource.get("resourceType") != "ImagingStudy":
                kind = resource.get("resourceType") if isinstance(resource, dict) else None
                raise fail(BAD_USER_INPUT, f"Bundle.entry[{index}].resource",
                           f"only ImagingStudy resources are imported, not {kind or 'this'}")
            if "id" in resource and (not isinstance(resource["id"], str)
                                     or CHECKS["id"](resource["id"])):
                raise fail(BAD_USER_INPUT, "ImagingStudy.id", "must be a FHIR id (1 to 64 "
                           "letters, digits, '-' and '.')")
            target = await self._match(resource)
            if self._admit is not None:
                self._admit(resource, "u" if target else "c", "ImagingStudyImport",
                            target is None)
            if target is None:
                study = edit.create(resource, self.repo.max_instances, self.repo.max_series)
                return _Plan(index, study, CREATED)
            new = edit.replace(target, {**resource, "id": target["id"]},
                               self.repo.max_instances, self.repo.max_series)
            status = UNCHANGED if same_content(new, target) else UPDATED
            return _Plan(index, {**resource, "id": target["id"]}, status, target)
        except StoreError as error:
            return _Plan(index, resource, REJECTED, error=error)

    async def _match(self, resource: Study) -> Study | None:
        token = study_uid_token(resource)
        if token is not None:
            # One live study per Study Instance UID (a unique index), so at most one match.
            found = await self.repo.match([("identifier", token)])
            if found is not None:
                if not same_subject(found, resource):
                    raise fail(BAD_USER_INPUT, "ImagingStudy.subject", f"the study with this "
                               f"Study Instance UID (ImagingStudy/{found['id']}) is about "
                               "another subject; import never merges studies across subjects")
                return found
        study_id = resource.get("id")
        return await self.repo.match_id(study_id) if isinstance(study_id, str) else None

    async def _apply(self, plan: _Plan) -> EntryResult:
        if plan.target is None:
            study, created = await self.repo.create(plan.resource,
                                                    study_uid_condition(plan.resource))
            if not created:  # another importer created it first: now it is an update
                raise fail(VERSION_CONFLICT, "ImagingStudy", "created concurrently")
            return EntryResult(plan.index, CREATED, study["id"])
        version = plan.target["meta"]["versionId"]
        study = await self.repo.update(plan.target["id"], plan.resource, version)
        status = UNCHANGED if study["meta"]["versionId"] == version else UPDATED
        return EntryResult(plan.index, status, study["id"])

    def _result(self, plan: _Plan) -> EntryResult:
        target_id = plan.target["id"] if plan.target else plan.resource.get("id")
        return EntryResult(plan.index, plan.status, target_id)

    async def _transaction(self, resources: list[Any]) -> list[EntryResult]:
        """All or nothing: every entry is planned before any write; a write that still fails
        (a concurrent change) undoes the ones already made."""
        plans = [await self._plan(i, r) for i, r in enumerate(resources)]
        failed = [p for p in plans if p.error is not None]
        if failed:
            return [_rejected(p.index, p.error) if p.error else self._abandoned(p, failed[0])
                    for p in plans]
        if self.dry_run:
            return [self._result(p) for p in plans]
        done: list[tuple[_Plan, EntryResult]] = []
        for plan in plans:
            try:
                result = self._result(plan) if plan.status == UNCHANGED \
                    else await self._apply(plan)
            except StoreError as error:
                await self._undo(done)
                plan.error = error
                return [_rejected(p.index, error) if p is plan else self._abandoned(p, plan)
                        for p in plans]
            done.append((plan, result))
        return [result for _, result in done]

    async def _undo(self, done: list[tuple[_Plan, EntryResult]]) -> None:
        for plan, result in reversed(done):
            if result.status == CREATED and result.id:
                await self.repo.purge(result.id, "1")
            elif result.status == UPDATED and plan.target is not None:
                stored = await self.repo.get(plan.target["id"])
                if stored is not None:
                    await self.repo.restore(plan.target, stored["meta"]["versionId"])

    @staticmethod
    def _abandoned(plan: _Plan, cause: _Plan) -> EntryResult:
        issue = Issue(f"Bundle.entry[{plan.index}]", f"not imported: the transaction failed "
                      f"at entry {cause.index}", "processing")
        return _rejected(plan.index, StoreError(BAD_USER_INPUT, [issue]))
