"""FHIR JSON in: single ImagingStudy resources and Bundles, each entry matched and written by
the same rules as every other write, with one result per entry.

Matching: an entry that carries a Study Instance UID identifier (urn:dicom:uid) is matched on
it, so importing the same file twice changes nothing; otherwise an entry whose `id` exists
updates that study (under the lifecycle rules), and anything else is created (with its `id`
when it has one). A `transaction` Bundle is all-or-nothing; other Bundle types go entry by
entry.

All-or-nothing: with MongoDB, a transaction Bundle's writes run in one multi-document
transaction. The embedded store has none, so a failure there undoes each write already made,
by compare-and-set on the version that write made: a study someone else wrote since keeps
their write, and its entry says it was not undone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from store.fhir import Study, edit
from store.fhir.identity import same_subject, study_uids
from store.fhir.outcome import (
    BAD_USER_INPUT,
    INTERNAL_SERVER_ERROR,
    VERSION_CONFLICT,
    Issue,
    OutcomeError,
    StoreError,
    fail,
    outcome,
)
from store.fhir.primitives import CHECKS
from store.fhir.validate import ROOT
from store.interop.bundle import entries, study_uid_condition, study_uid_token
from store.mongo.client import transient
from store.mongo.repository import same_content
from store.mongo.search import Params

log = logging.getLogger("imaging.import")
# (resource, scope letter, operation, new) -> the caller's patient, or raises (an OutcomeError:
# the access gate's refusals are the api's, not StoreErrors).
Admit = Callable[[Study, str, str, bool], Any]
# Planning an entry runs the write rules on the event loop: a fraction of a millisecond for a
# small study, but seconds for a Bundle of 30,000, during which no other request would be
# served. So planning lets the loop run other work whenever it has gone on this long.
SLICE_SECONDS = 0.002
CREATED, UPDATED, UNCHANGED, REJECTED = "created", "updated", "unchanged", "rejected"


@dataclass
class EntryResult:
    """What became of one imported resource."""

    index: int
    status: str
    id: str | None = None
    outcome: dict[str, Any] | None = None
    version: str | None = None  # the meta.versionId this entry's write made (None: no write)


@dataclass
class _Plan:
    index: int
    resource: Study
    status: str
    target: Study | None = None  # the stored study an update replaces
    error: OutcomeError | None = None


class _Failed(Exception):
    """A transaction Bundle that failed part-way, with the result of every entry."""

    def __init__(self, results: list[EntryResult]) -> None:
        super().__init__("transaction failed")
        self.results = results


def _rejected(index: int, error: OutcomeError) -> EntryResult:
    return EntryResult(index, REJECTED, None, error.outcome())


def in_entry(result: EntryResult) -> None:
    """Rewrites the issues of a Bundle entry's outcome to name the entry: the write rules say
    `ImagingStudy.status`, the client sent `Bundle.entry[2].resource.status`."""
    entry = f"Bundle.entry[{result.index}].resource"
    for issue in (result.outcome or {}).get("issue", ()):
        issue["expression"] = [
            entry + path[len(ROOT) :]
            if path == ROOT or path.startswith((f"{ROOT}.", f"{ROOT}["))
            else path
            for path in issue.get("expression", ())
        ]


LARGE_ENTRY = 1_000  # instances: above this, an entry's rules run in a worker thread


async def _rules(resource: Any, rule: Callable[..., Study], *args: Any) -> Study:
    """Runs a pure write rule on an entry: in a worker thread when the entry is large (one
    50,000-instance study held the loop ~0.4 s), inline otherwise (a thread hop per small
    entry would cost more than the rule)."""
    series = resource.get("series") if isinstance(resource, dict) else None
    size = (
        sum(
            len(one["instance"])
            for one in series
            if isinstance(one, dict) and isinstance(one.get("instance"), list)
        )
        if isinstance(series, list)
        else 0
    )
    return await asyncio.to_thread(rule, *args) if size > LARGE_ENTRY else rule(*args)


async def _refuse_repeats(plans: list[_Plan], pause: Callable[[], Awaitable[None]]) -> None:
    """Two entries of one transaction for the same study would conflict with each other at
    every try: refused up front, naming the first entry. A pass over 30,000 entries takes
    tens of milliseconds: it lets the loop run other work as planning does (`pause`)."""
    first: dict[str, int] = {}
    for plan in plans:
        await pause()
        if plan.error is not None:
            continue
        keys = [f"id {plan.target['id']}"] if plan.target else []
        keys += [f"Study Instance UID {uid}" for _, uid in study_uids(plan.resource)]
        for key in keys:
            if key in first:
                plan.error = fail(
                    BAD_USER_INPUT,
                    f"Bundle.entry[{plan.index}]",
                    f"the {key} is also entry {first[key]}'s: one transaction writes a study once",
                )
                break
            first[key] = plan.index


T = TypeVar("T")


class Target(Protocol):
    """What an import reads and writes through: the repository, or the caller-scoped store
    that wraps it (api/access/scoped.py)."""

    @property
    def max_instances(self) -> int: ...
    @property
    def max_series(self) -> int: ...
    @property
    def in_transaction(self) -> bool: ...

    async def check_uid(self, study: Study) -> None: ...
    async def match(self, params: Params) -> Study | None: ...
    async def match_id(self, study_id: str) -> Study | None: ...
    async def create(
        self, resource: Study, if_none_exist: str | None = None
    ) -> tuple[Study, bool]: ...
    async def update(self, study_id: str, resource: Study, version_id: str | None) -> Study: ...
    async def atomically(self, work: Callable[[Self | None], Awaitable[T]]) -> T: ...
    async def undo(self, study_id: str, written: str, previous: Study | None) -> bool: ...


class Importer:
    """Imports resources and Bundles into one repository."""

    def __init__(
        self, repo: Target, dry_run: bool = False, attempts: int = 5, admit: Admit | None = None
    ) -> None:
        # The repository, or the caller-scoped store that wraps it: then matching sees only
        # the studies the caller may update, and `admit` checks each incoming resource.
        self.repo = repo
        self.dry_run = dry_run
        self._attempts = attempts
        self._admit = admit
        self._slice_start = time.perf_counter()

    async def _pause(self) -> None:
        """Yields to the event loop once a slice of planning has run."""
        if time.perf_counter() - self._slice_start >= SLICE_SECONDS:
            await asyncio.sleep(0)
            self._slice_start = time.perf_counter()

    async def _paused(self, result: EntryResult) -> EntryResult:
        """`result`, once the loop has had its turn if a slice has run out (building 30,000
        results in one go held it ~20 ms)."""
        await self._pause()
        return result

    async def run(self, payload: Any) -> list[EntryResult]:
        kind, resources = entries(payload)
        if kind == "transaction":
            results = await self._transaction(resources)
        else:
            results = [
                await self._safely(index, resource) for index, resource in enumerate(resources)
            ]
        if kind is not None:  # a Bundle: each issue names its entry
            for result in results:
                await self._pause()
                in_entry(result)
        return results

    async def _safely(self, index: int, resource: Any) -> EntryResult:
        """One entry of a batch: whatever happens, the entries before it stay reported as
        written, so a client never retries what was committed because of a later fault."""
        try:
            return await self._one(index, resource)
        except Exception:
            log.exception("import entry %d failed unexpectedly", index)
            return _rejected(
                index,
                StoreError(
                    INTERNAL_SERVER_ERROR,
                    [
                        Issue(
                            f"Bundle.entry[{index}]",
                            "an unexpected error stopped this entry (see the "
                            "server log); importing it again is safe",
                            "exception",
                        )
                    ],
                ),
            )

    async def _one(self, index: int, resource: Any) -> EntryResult:
        for _ in range(self._attempts):
            plan = await self._plan(index, resource)
            if plan.error is not None:
                return _rejected(index, plan.error)
            if self.dry_run or plan.status == UNCHANGED:
                return self._result(plan)
            try:
                return await self._apply(plan)
            except OutcomeError as error:  # the rules' refusals and the gate's, alike
                if error.code != VERSION_CONFLICT:
                    return _rejected(index, error)
                # Someone wrote the same study meanwhile: plan again against what is there.
        return _rejected(
            index,
            fail(
                VERSION_CONFLICT, "ImagingStudy", "the study kept changing during the import; retry"
            ),
        )

    async def _plan(self, index: int, resource: Any) -> _Plan:
        await self._pause()
        try:
            if not isinstance(resource, dict) or resource.get("resourceType") != "ImagingStudy":
                kind = resource.get("resourceType") if isinstance(resource, dict) else None
                raise fail(
                    BAD_USER_INPUT,
                    f"Bundle.entry[{index}].resource",
                    f"only ImagingStudy resources are imported, not {kind or 'this'}",
                )
            if "id" in resource and (
                not isinstance(resource["id"], str) or CHECKS["id"](resource["id"])
            ):
                raise fail(
                    BAD_USER_INPUT,
                    "ImagingStudy.id",
                    "must be a FHIR id (1 to 64 letters, digits, '-' and '.')",
                )
            target = await self._match(resource)
            if self._admit is not None:
                self._admit(resource, "u" if target else "c", "ImagingStudyImport", target is None)
            if target is None:
                await self.repo.check_uid(resource)  # so a dry run says what a write would
                study = await _rules(
                    resource, edit.create, resource, self.repo.max_instances, self.repo.max_series
                )
                return _Plan(index, study, CREATED)
            new = await _rules(
                resource,
                edit.replace,
                target,
                {**resource, "id": target["id"]},
                self.repo.max_instances,
                self.repo.max_series,
            )
            status = UNCHANGED if same_content(new, target) else UPDATED
            return _Plan(index, {**resource, "id": target["id"]}, status, target)
        except OutcomeError as error:  # the rules' refusals and the gate's
            return _Plan(index, resource, REJECTED, error=error)

    async def _match(self, resource: Study) -> Study | None:
        token = study_uid_token(resource)
        if token is not None:
            # One live study per Study Instance UID (a unique index), so at most one match.
            found = await self.repo.match([("identifier", token)])
            if found is not None:
                if not same_subject(found, resource):
                    raise fail(
                        BAD_USER_INPUT,
                        "ImagingStudy.subject",
                        f"the study with this "
                        f"Study Instance UID (ImagingStudy/{found['id']}) is about "
                        "another subject; import never merges studies across subjects",
                    )
                return found
        study_id = resource.get("id")
        return await self.repo.match_id(study_id) if isinstance(study_id, str) else None

    async def _apply(self, plan: _Plan, repo: Target | None = None) -> EntryResult:
        repo = repo or self.repo
        if plan.target is None:
            # Inside a server transaction its snapshot stands in for the claim on the Study
            # UID (a claim's expected duplicate-key error would abort the transaction).
            condition = None if repo.in_transaction else study_uid_condition(plan.resource)
            study, created = await repo.create(plan.resource, condition)
            if not created:  # another importer created it first: now it is an update
                raise fail(VERSION_CONFLICT, "ImagingStudy", "created concurrently")
            return EntryResult(plan.index, CREATED, study["id"], version=study["meta"]["versionId"])
        version = plan.target["meta"]["versionId"]
        study = await repo.update(plan.target["id"], plan.resource, version)
        status = UNCHANGED if study["meta"]["versionId"] == version else UPDATED
        return EntryResult(
            plan.index,
            status,
            study["id"],
            version=study["meta"]["versionId"] if status == UPDATED else None,
        )

    def _result(self, plan: _Plan) -> EntryResult:
        target_id = plan.target["id"] if plan.target else plan.resource.get("id")
        return EntryResult(plan.index, plan.status, target_id)

    async def _transaction(self, resources: list[Any]) -> list[EntryResult]:
        """All or nothing: every entry is planned before any write; a write that still fails
        (a concurrent change, or anything unexpected) takes back the ones already made."""
        plans = [await self._plan(i, r) for i, r in enumerate(resources)]
        await _refuse_repeats(plans, self._pause)
        failed = [p for p in plans if p.error is not None]
        if failed:
            return [
                _rejected(p.index, p.error) if p.error else self._abandoned(p, failed[0])
                for p in plans
            ]
        if self.dry_run:
            return [await self._paused(self._result(p)) for p in plans]
        try:
            return await self.repo.atomically(lambda bound: self._write_all(plans, bound))
        except _Failed as failure:
            return failure.results
        except Exception as error:
            if not transient(error):
                raise
            # The server transaction kept meeting concurrent writes and was given up.
            conflict = fail(
                VERSION_CONFLICT,
                "Bundle",
                "the studies kept changing during the transaction; nothing was imported; retry",
            )
            return [_rejected(p.index, conflict) for p in plans]

    async def _write_all(self, plans: list[_Plan], bound: Target | None) -> list[EntryResult]:
        """Writes every entry, through `bound` inside a server transaction (whose abort takes
        every write back) or through the repository (undoing each write on failure). Raises
        _Failed with every entry's result when an entry fails."""
        done: list[tuple[_Plan, EntryResult]] = []
        for plan in plans:
            try:
                result = (
                    self._result(plan)
                    if plan.status == UNCHANGED
                    else await self._apply(plan, bound)
                )
            except BaseException as error:
                if bound is not None and transient(error):
                    raise  # the server runs the whole transaction again
                kept: dict[int, str] = {}
                if bound is None:
                    # Shielded: a cancelled request still takes back what it wrote.
                    kept = await asyncio.shield(asyncio.ensure_future(self._undo(done)))
                if not isinstance(error, Exception):
                    raise
                raise _Failed(self._failure(plans, plan, error, done, kept)) from None
            done.append((plan, result))
        return [result for _, result in done]

    async def _undo(self, done: list[tuple[_Plan, EntryResult]]) -> dict[int, str]:
        """Takes back each write, newest first; returns why, for each entry whose write
        stands."""
        kept: dict[int, str] = {}
        for plan, result in reversed(done):
            if result.version is None or result.id is None:
                continue  # unchanged: nothing was written
            previous = plan.target if result.status == UPDATED else None
            try:
                if not await self.repo.undo(result.id, result.version, previous):
                    kept[plan.index] = (
                        f"not undone: the study was changed by another writer "
                        f"since this entry wrote version {result.version}; "
                        "that write stands"
                    )
            except Exception as error:
                log.exception("undoing entry %d of a failed transaction", plan.index)
                reason = error.message if isinstance(error, StoreError) else "an internal error"
                kept[plan.index] = f"not undone: {reason}; the entry's write stands"
        return kept

    def _failure(
        self,
        plans: list[_Plan],
        cause: _Plan,
        error: Exception,
        done: list[tuple[_Plan, EntryResult]],
        kept: dict[int, str],
    ) -> list[EntryResult]:
        written = {plan.index: result for plan, result in done}
        results = []
        for plan in plans:
            if plan is cause:
                results.append(self._failed_entry(plan, error))
            elif plan.index in kept:
                result = written[plan.index]
                issue = Issue(
                    f"Bundle.entry[{plan.index}]",
                    f"the transaction failed at entry {cause.index}, but {kept[plan.index]}",
                    "conflict",
                )
                results.append(
                    EntryResult(
                        plan.index, result.status, result.id, outcome([issue]), result.version
                    )
                )
            else:
                results.append(self._abandoned(plan, cause))
        return results

    @staticmethod
    def _failed_entry(plan: _Plan, error: Exception) -> EntryResult:
        if isinstance(error, OutcomeError):
            return _rejected(plan.index, error)
        # Not the client's fault and not theirs to read: the details go to the log (with the
        # request id), the entry says what happened to the transaction.
        log.error("entry %d of a transaction Bundle failed", plan.index, exc_info=error)
        issue = Issue(
            f"Bundle.entry[{plan.index}]",
            "the server failed on this entry (an "
            "internal error, logged); the transaction was not imported",
            "exception",
        )
        return EntryResult(plan.index, REJECTED, None, outcome([issue]))

    @staticmethod
    def _abandoned(plan: _Plan, cause: _Plan) -> EntryResult:
        issue = Issue(
            f"Bundle.entry[{plan.index}]",
            f"not imported: the transaction failed at entry {cause.index}",
            "processing",
        )
        return _rejected(plan.index, StoreError(BAD_USER_INPUT, [issue]))
