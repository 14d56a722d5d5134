"""The one access gate: a store scoped to one caller.

Made once per request (per operation on a WebSocket) from the verified Access, it wraps the
repository and is the only store that resolvers, the import path, ingest and subscriptions can
reach. Every read, search, count, history, conditional-create match, import match and change
event passes through it, and it applies the scopes and the patient confinement here and nowhere
else. To a caller confined to one patient, another patient's study does not exist: reads leave
it out, writes to it answer exactly what a missing id answers, and no error names it, counts it
or gives its version."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from api.access.auth import Access, owned
from api.access.vouched import unvouched
from api.errors import AccessError, denied
from store.fhir import Study
from store.fhir.outcome import (
    FORBIDDEN,
    NOT_FOUND,
    VERSION_CONFLICT,
    DuplicateUid,
    StoreError,
    fail,
)
from store.interop.importer import Importer
from store.mongo.events import Change
from store.mongo.reads import Page
from store.mongo.repository import Repository
from store.mongo.search import Params, escape

T = TypeVar("T")
ROOT = "ImagingStudy"


def _reference(patient: str | None) -> str | None:
    return None if patient is None else f"Patient/{patient}"


def _refuse_unvouched(operation: str, patient: str, path: str) -> AccessError:
    return denied(
        FORBIDDEN,
        f"{operation}: a token confined to one patient cannot set {path}: who the patient is "
        "(an MRN, a name), which order a study belongs to (an accession number) and who "
        "referred or performed it are for the record's systems to say; the subject is "
        f"Patient/{patient} by its reference",
        f"{ROOT}.{path}",
    )


def _missing(study_id: str) -> StoreError:
    # The one answer for "no such study" and "a study this caller may not see".
    return fail(NOT_FOUND, ROOT, f"no ImagingStudy with id '{study_id}'")


class ScopedStore:
    """The repository as one caller may use it."""

    # Repository methods no caller reaches, each with the reason; a test fails when the
    # repository gains a public method that is neither here nor on this class.
    NOT_FOR_CALLERS = {
        "ensure_indexes": "run once at start-up by the app",
        "ping": "the readiness probe; reads no study",
        "explain": "query plans, for operators and tests; reads no study",
    }

    def __init__(
        self, repo: Repository, access: Access, touched: list[tuple[str, str | None]] | None = None
    ) -> None:
        self._repo = repo
        self.access = access
        # (study id, subject reference) of every study this caller touched, for the audit.
        self.touched = [] if touched is None else touched

    @property
    def max_instances(self) -> int:
        return self._repo.max_instances

    @property
    def max_series(self) -> int:
        return self._repo.max_series

    # -- deciding ----------------------------------------------------------------------------

    def require(self, letters: str, operation: str) -> str | None:
        """Checks the scope letters; the patient id the caller is confined to, if any."""
        return self.access.require(letters, operation)

    def may(self, letter: str, study: Study | None) -> bool:
        """Whether the caller may `letter` (r, u, ...) this stored study."""
        try:
            patient = self.access.require(letter, "")
        except AccessError:
            return False
        return study is not None and owned(study, patient)

    def _within(self, patient: str | None) -> Params:
        # Escaped: a claim with a comma must not turn into an OR of patients.
        return [] if patient is None else [("patient", escape(patient))]

    def _touch(self, study: Study | None) -> None:
        if study and isinstance(study.get("id"), str):
            subject = study.get("subject")
            reference = subject.get("reference") if isinstance(subject, dict) else None
            self.touched.append((study["id"], reference if isinstance(reference, str) else None))

    def admit(self, resource: Study, letter: str, operation: str, new: bool) -> str | None:
        """Checks a resource the caller sends: a confined caller writes only for its patient
        and, creating, never chooses the id (an id taken by a study it cannot see would
        otherwise tell it that the study exists)."""
        patient = self.require(letter, operation)
        if patient is None:
            return None
        if not owned(resource, patient):
            raise denied(
                FORBIDDEN,
                f"{operation}: this token may only write studies about Patient/{patient}",
                f"{ROOT}.subject",
            )
        if new and (path := unvouched(resource, None)) is not None:
            raise _refuse_unvouched(operation, patient, path)
        if new and resource.get("id") is not None:
            raise denied(
                FORBIDDEN,
                f"{operation}: a token confined to one patient cannot "
                "choose the id of a new study; leave id out and the server assigns "
                "one",
                f"{ROOT}.id",
            )
        return patient

    def _guard(self, study_id: str, letters: str, operation: str) -> Callable[[Study], None]:
        """The precondition each write checks on the stored study, inside its compare-and-set
        and before anything else: a study the caller may not `letters` is a missing id."""
        patients = {self.require(letter, operation) for letter in letters}

        def check(study: Study) -> None:
            self._touch(study)
            if not all(owned(study, patient) for patient in patients):
                raise _missing(study_id)

        return check

    async def _visible(self, study_id: str, letters: str, operation: str) -> None:
        """A cheap look before a write by a confined caller: a study it may not see answers
        NOT_FOUND without being loaded whole (so no slower than a missing id). The guard
        inside the write still decides, atomically."""
        patients = {self.require(letter, operation) for letter in letters} - {None}
        if (
            patients
            and await self._repo.get(study_id, {"id"}, subject=_reference(next(iter(patients))))
            is None
        ):
            raise _missing(study_id)

    async def _named(self, error: DuplicateUid) -> StoreError:
        """A duplicate Study Instance UID names the holder only to a caller who may read it."""
        holder = await self._repo.get(error.holder, ["subject"])
        return error.naming_holder() if self.may("r", holder) else error

    # -- reads -------------------------------------------------------------------------------

    async def get(
        self,
        study_id: str,
        fields: set[str] | None = None,
        operation: str = "ImagingStudy",
        instances: tuple[int, int | None] | None = None,
    ) -> Study | None:
        """The study, if the caller may read it; `instances` (offset, count): only that page
        of each series' instances (see Reads.get)."""
        patient = self.require("r", operation)
        # Another patient's study is as good as absent, and is not even loaded.
        study = await self._repo.get(
            study_id,
            None if fields is None else fields | {"subject"},
            subject=_reference(patient),
            instances=instances,
        )
        self._touch(study)
        return study

    async def search(
        self,
        params: Params,
        count: int,
        offset: int = 0,
        sort: str | None = None,
        fields: set[str] | None = None,
        operation: str = "ImagingStudyList",
    ) -> list[Study]:
        within = self._within(self.require("rs", operation))
        studies = await self._repo.search([*params, *within], count, offset, sort, fields)
        for study in studies:
            self._touch(study)
        return studies

    async def count(
        self,
        params: Params,
        operation: str = "ImagingStudyConnection",
        skip: int = 0,
        limit: int | None = None,
    ) -> int:
        within = self._within(self.require("rs", operation))
        # The bounds go as keywords, and only those given (the store's defaults stand).
        bounds: dict[str, Any] = {"skip": skip, "limit": limit} if skip or limit is not None else {}
        return await self._repo.count([*params, *within], **bounds)

    async def page(
        self,
        params: Params,
        count: int,
        cursor: str | None = None,
        sort: str | None = None,
        fields: Iterable[str] | None = (),
        total: bool = True,
        operation: str = "ImagingStudyConnection",
        carry: Any = None,
    ) -> Page:
        # The cursors carry the caller's own search (`carry`), never the patient the gate
        # adds; they stay bound to it all the same (the query digest covers `within`), so a
        # cursor made for one caller cannot continue under another's confinement.
        within = self._within(self.require("rs", operation))
        page = await self._repo.page([*params, *within], count, cursor, sort, fields, total, carry)
        for study in page.studies:
            self._touch(study)
        return page

    def carried(self, cursor: str) -> Any:
        """The search a cursor carries (the arguments its maker sent); no study is read."""
        return self._repo.carried(cursor)

    def check_cursor(
        self,
        params: Params,
        cursor: str,
        sort: str | None = None,
        operation: str = "ImagingStudyConnection",
    ) -> None:
        within = self._within(self.require("rs", operation))
        self._repo.check_cursor([*params, *within], cursor, sort)

    async def stream(self, params: Params, sort: str | None = None) -> AsyncIterator[Study]:
        within = self._within(self.require("rs", "export"))
        async for study in self._repo.stream([*params, *within], sort):
            yield study

    async def history(
        self,
        study_id: str,
        count: int,
        fields: set[str] | None = None,
        operation: str = "ImagingStudyHistory",
    ) -> list[Study]:
        patient = self.require("r", operation)
        versions = await self._repo.history(
            study_id,
            count,
            None if fields is None else fields | {"subject"},
            subject=_reference(patient),
        )
        if versions:
            self._touch(versions[0])
        return versions

    def visible(self, operation: str) -> Callable[[Change], bool]:
        """Which change events this caller may receive (checked once, applied to each): a
        confined caller only those whose subject is its patient, a delete by the subject the
        study had (a purge, which has none, never)."""
        patient = self.require("r", operation)
        return lambda change: (
            patient is None
            or (
                change.subject is not None
                and owned({"subject": {"reference": change.subject}}, patient)
            )
        )

    # -- writes ------------------------------------------------------------------------------

    async def create(
        self,
        resource: Study,
        if_none_exist: str | None = None,
        operation: str = "ImagingStudyCreate",
    ) -> tuple[Study, bool]:
        """Creates, or with `if_none_exist` returns the match. A conditional create is a
        search: it needs `r` and `s` too, and looks only among the studies the caller may
        search, so whatever it returns the caller may read."""
        self.admit(resource, "c", operation, new=True)
        within = (
            []
            if if_none_exist is None
            else self._within(self.require("rs", f"{operation} with ifNoneExist"))
        )
        try:
            study, created = await self._repo.create(resource, if_none_exist, within)
        except DuplicateUid as error:
            raise await self._named(error) from None
        self._touch(study)
        return study, created

    async def update(
        self,
        study_id: str,
        resource: Study,
        version_id: str | None,
        operation: str = "ImagingStudyUpdate",
    ) -> Study:
        patient = self.admit(resource, "u", operation, new=False)

        def keeps_vouched(stored: Study) -> None:
            # Inside the compare-and-set, after the guard: against the version replaced.
            if patient is not None and (path := unvouched(resource, stored)) is not None:
                raise _refuse_unvouched(operation, patient, path)

        return await self._write(
            self._repo.update, study_id, "ur", operation, resource, version_id, also=keeps_vouched
        )

    async def set_status(self, study_id: str, status: str, version_id: str | None) -> Study:
        return await self._write(
            self._repo.set_status, study_id, "ur", "ImagingStudySetStatus", status, version_id
        )

    async def add_series(
        self, study_id: str, series: list[dict[str, Any]], version_id: str | None
    ) -> Study:
        operation = "ImagingStudyAddSeries"
        patient = self.require("u", operation)

        def keeps_vouched(stored: Study) -> None:
            # A new series' performer identifiers, as an update's (api/access/vouched.py).
            kept = {"series": stored.get("series") or []}
            if patient is not None and (path := unvouched({"series": series}, kept)) is not None:
                raise _refuse_unvouched(operation, patient, path)

        return await self._write(
            self._repo.add_series, study_id, "ur", operation, series, version_id, also=keeps_vouched
        )

    async def add_instances(
        self,
        study_id: str,
        series_uid: str,
        instances: list[dict[str, Any]],
        version_id: str | None,
    ) -> Study:
        return await self._write(
            self._repo.add_instances,
            study_id,
            "ur",
            "ImagingStudyAddInstances",
            series_uid,
            instances,
            version_id,
        )

    async def add_endpoints(
        self,
        study_id: str,
        study: list[dict[str, Any]],
        series: dict[str, list[dict[str, Any]]],
        version_id: str | None,
    ) -> Study:
        """Ingest's addition of the endpoint references a stored study lacks: an update of
        the study (`u` and `r`, as over GraphQL, where it is an ImagingStudyUpdate)."""
        return await self._write(
            self._repo.add_endpoints,
            study_id,
            "ur",
            "ImagingStudyUpdate",
            study,
            series,
            version_id,
        )

    async def remove_series(self, study_id: str, uids: list[str], version_id: str | None) -> Study:
        return await self._write(
            self._repo.remove_series, study_id, "ur", "ImagingStudyRemoveSeries", uids, version_id
        )

    async def remove_instances(
        self, study_id: str, series_uid: str, uids: list[str], version_id: str | None
    ) -> Study:
        return await self._write(
            self._repo.remove_instances,
            study_id,
            "ur",
            "ImagingStudyRemoveInstances",
            series_uid,
            uids,
            version_id,
        )

    async def delete(self, study_id: str, version_id: str | None) -> None:
        """Needs `d` only (a delete answers with nothing of the study); to a caller who may
        not read the study, a version conflict does not say the stored version."""
        await self._visible(study_id, "d", "ImagingStudyDelete")
        guard = self._guard(study_id, "d", "ImagingStudyDelete")
        readable: list[bool] = []

        def check(study: Study) -> None:
            guard(study)
            readable.append(self.may("r", study))

        try:
            await self._repo.delete(study_id, version_id, check)
        except StoreError as error:
            if error.code != VERSION_CONFLICT or not readable or readable[-1]:
                raise
            raise fail(
                VERSION_CONFLICT,
                f"{ROOT}.meta.versionId",
                f"versionId '{version_id}' is not the stored version",
            ) from None

    async def _write(
        self,
        method: Callable[..., Awaitable[Study]],
        study_id: str,
        letters: str,
        operation: str,
        *args: Any,
        also: Callable[[Study], None] | None = None,
    ) -> Study:
        """A write that answers with the study: the caller must be able to read it too.
        `also`: a further precondition on the stored study, checked after the gate's."""
        await self._visible(study_id, letters, operation)
        guard = self._guard(study_id, letters, operation)
        if also is not None:
            first, then = guard, also

            def guard(study: Study) -> None:
                first(study)
                then(study)

        try:
            return await method(study_id, *args, guard=guard)
        except DuplicateUid as error:
            raise await self._named(error) from None

    # -- import: matching among the studies the caller may update ------------------------------

    def importer(self, dry_run: bool = False) -> Importer:
        """The import path, matching and writing through this gate."""
        self.require("crus", "ImagingStudyImport")
        return Importer(self, dry_run=dry_run, admit=self.admit)

    async def match(self, params: Params) -> Study | None:
        """The one study matching `params` among those the caller may search and update."""
        within = self._within(self.require("rsu", "ImagingStudyImport"))
        found = await self._repo.search([*params, *within], 1)
        return found[0] if found else None

    async def check_uid(self, study: Study) -> None:
        try:
            await self._repo.check_uid(study)
        except DuplicateUid as error:
            raise await self._named(error) from None

    async def match_id(self, study_id: str) -> Study | None:
        """The study with this id if the caller may read and update it (else as good as
        absent)."""
        return await self._repo.get(
            study_id, subject=_reference(self.require("ru", "ImagingStudyImport"))
        )

    # -- transactions (the import of a transaction Bundle) ------------------------------------

    @property
    def in_transaction(self) -> bool:
        return bool(self._repo.in_transaction)

    async def atomically(self, work: Callable[[ScopedStore | None], Awaitable[T]]) -> T:
        """Runs `work` in one store transaction (see Repository.atomically); what it is
        handed is this same gate over the transaction's repository."""

        async def scoped(bound: Repository | None) -> T:
            return await work(
                None if bound is None else ScopedStore(bound, self.access, self.touched)
            )

        return await self._repo.atomically(scoped)

    async def undo(self, study_id: str, written: str, previous: Study | None) -> bool:
        """Takes back this caller's own write of moments ago (a failed transaction), as a
        compare-and-set on the version that write made: nothing else can be undone."""
        return await self._repo.undo(study_id, written, previous)
