"""Where the CLI reads and writes: straight to MongoDB (MONGODB_URI), or a running server
through its GraphQL API. Both end in the same store code, so both give the same results."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from api.access.auth import Access
from api.access.scoped import ScopedStore
from store.fhir import Study
from store.fhir.endpoints import with_endpoints
from store.fhir.identity import uid_element
from store.fhir.outcome import (
    BAD_USER_INPUT,
    NOT_FOUND,
    QUERY_REJECTED,
    UNAUTHENTICATED,
    VERSION_CONFLICT,
    fail,
)
from store.interop.bundle import study_uid_token
from store.interop.files import canonical
from store.interop.importer import EntryResult
from store.interop.ingest import ID_ELEMENT, Writer
from store.mongo.repository import Repository
from store.mongo.search import (
    CODES,
    IDENTIFIER_SEARCHES,
    Params,
    filter_comparison,
    graphql_name,
    split_unescaped,
)

DEFAULT_URL = "http://127.0.0.1:8000/graphql"


class Target(Writer, Protocol):
    """Everything the CLI does: the ingest Writer, import, export and count."""

    async def import_payload(self, payload: Any, dry_run: bool) -> list[EntryResult]: ...
    def export(self, params: Params, sort: str | None) -> AsyncIterator[dict[str, Any]]: ...
    async def count(self, params: Params) -> int: ...


class LocalTarget:
    """The store itself (a real MongoDB from the CLI, or the app's own store at start-up),
    through the same access gate as every request, with the operator's full access."""

    def __init__(self, repo: Repository) -> None:
        self.store = ScopedStore(repo, Access(subject="operator"))
        self.create = self.store.create
        self.add_series = self.store.add_series
        self.add_instances = self.store.add_instances
        self.add_endpoints = self.store.add_endpoints

    async def import_payload(self, payload: Any, dry_run: bool) -> list[EntryResult]:
        return await self.store.importer(dry_run=dry_run).run(payload)

    async def export(self, params: Params, sort: str | None) -> AsyncIterator[dict[str, Any]]:
        async for study in self.store.stream(params, sort):
            yield canonical(study)

    async def count(self, params: Params) -> int:
        return await self.store.count(params)


class RemoteError(Exception):
    """The server refused a request (`code` is its contract code) or could not be reached."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        expression: str | None = None,
        issue: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.expression = expression  # the element the first issue names, if any
        self.issue = issue  # the first issue's FHIR issue type (duplicate, ...), if any


IMPORT = """mutation($r: JSON!, $d: Boolean!) { ImagingStudyImport(resource: $r, dryRun: $d) {
  index status id outcome } }"""
_ARGS = ", ".join(f"${graphql_name(c)}: [String!]" for c in CODES)
_PASS = ", ".join(f"{graphql_name(c)}: ${graphql_name(c)}" for c in CODES)


def _connection(selection: str) -> str:
    return (
        f"query($c: Int, $cur: String, $sort: String, $f: String, {_ARGS}) {{ "
        f"ImagingStudyConnection(_count: $c, _cursor: $cur, _sort: $sort, _filter: $f, "
        f"{_PASS}) {{ {selection} }} }}"
    )


PAGE = _connection("next edges { resource { fhirJson } }")
# Each fhirJson is priced as the largest study a server accepts, so a page of whole studies is
# small: 5 fit the default cost limit.
EXPORT_PAGE = 5
COUNT = _connection("count")
# What ingest needs of a stored study: its series and instances, its subject (a study of
# another subject is never merged into) and the endpoints of both (the sync adds its own).
_REFERENCE = "reference identifier { system value }"
TREE = (
    f"id subject {{ {_REFERENCE} }} endpoint {{ {_REFERENCE} }} "
    f"series {{ uid endpoint {{ {_REFERENCE} }} instance {{ uid }} }}"
)
FIND = f"query($t: [String!]) {{ ImagingStudyList(identifier: $t, _count: 2) {{ {TREE} }} }}"
CREATE = f"""mutation($r: ImagingStudyInput!, $c: String) {{
  ImagingStudyCreate(res: $r, ifNoneExist: $c) {{ {TREE} }} }}"""
ADD_SERIES = f"""mutation($id: ID!, $s: [ImagingStudySeriesInput!]!, $v: String) {{
  ImagingStudyAddSeries(id: $id, series: $s, versionId: $v) {{ {TREE} }} }}"""
# The endpoints are added by a whole update of the whole study as read (fhirJson), under the
# version read: a partial selection sent back would drop every element it left out.
WHOLE = "query($id: ID!) { ImagingStudy(id: $id) { fhirJson } }"
UPDATE = f"""mutation($id: ID!, $r: ImagingStudyInput!, $v: String) {{
  ImagingStudyUpdate(id: $id, res: $r, versionId: $v) {{ {TREE} }} }}"""
ATTEMPTS = 20  # reads and updates of one study before a VERSION_CONFLICT is given up
ADD_INSTANCES = """mutation($id: ID!, $u: String!, $i: [ImagingStudySeriesInstanceInput!]!,
  $v: String) { ImagingStudyAddInstances(id: $id, seriesUid: $u, instances: $i,
  versionId: $v) { id } }"""


class RemoteTarget:
    """A running server, through the same GraphQL API every client uses."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        client: httpx.AsyncClient | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.client = client or httpx.AsyncClient(timeout=120)
        self.headers = {"authorization": f"Bearer {token}"} if token else {}

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        try:
            response = await self.client.post(
                self.url, headers=self.headers, json={"query": query, "variables": variables}
            )
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__
            raise RemoteError(
                f"cannot reach {self.url} ({reason}). Start the server there "
                "(`make serve` or `imaging-api serve`), or name the one to use "
                "with --url or IMAGING_URL (or set MONGODB_URI to write to "
                "MongoDB directly)"
            ) from None
        if response.status_code in (404, 405) and not self.url.rstrip("/").endswith("/graphql"):
            raise RemoteError(
                f"{self.url} answered HTTP {response.status_code}: the GraphQL "
                "endpoint is the URL's /graphql path (--url "
                f"{self.url.rstrip('/')}/graphql)"
            )
        if response.status_code != 200:
            raise RemoteError(f"{self.url} answered HTTP {response.status_code}")
        body = response.json()
        if body.get("errors"):
            first = body["errors"][0]
            code = first.get("extensions", {}).get("code")
            hint = (
                " (set IMAGING_TOKEN to a bearer token for this server)"
                if code == UNAUTHENTICATED and not self.headers
                else ""
            )
            issues = (first.get("extensions", {}).get("resource") or {}).get("issue") or [{}]
            expression = (issues[0].get("expression") or [None])[0]
            raise RemoteError(
                f"{code}: {first['message']}{hint}", code, expression, issues[0].get("code")
            )
        data: dict[str, Any] = body["data"]
        return data

    async def import_payload(self, payload: Any, dry_run: bool) -> list[EntryResult]:
        data = await self.call(IMPORT, r=payload, d=dry_run)
        return [
            EntryResult(r["index"], r["status"], r["id"], r["outcome"])
            for r in data["ImagingStudyImport"]
        ]

    def _variables(self, params: Params) -> dict[str, Any]:
        """The CLI's REST pairs (a repeated name is AND, a comma OR) as GraphQL arguments,
        where a list is OR and a comma is literal: a name's first value becomes its list, a
        repeat of the name goes through `_filter`."""
        found: dict[str, Any] = {}
        ands: list[str] = []
        for name, value in params:
            items = split_unescaped(value, ",")
            if graphql_name(name) in found:
                if name in IDENTIFIER_SEARCHES:  # _filter has no modifiers to say it with
                    raise RemoteError(
                        f"--{name.replace(':', '-')} may be given once over a server (a comma "
                        "between values means any of them); with MONGODB_URI it may repeat"
                    )
                ands.append(f"({' or '.join(filter_comparison(name, i) for i in items)})")
            else:
                found[graphql_name(name)] = items
        if ands:
            found["f"] = " and ".join(ands)
        return found

    async def export(self, params: Params, sort: str | None) -> AsyncIterator[dict[str, Any]]:
        cursor, size = None, EXPORT_PAGE
        while True:
            try:
                data = await self.call(
                    PAGE, c=size, cur=cursor, sort=sort, **self._variables(params)
                )
            except RemoteError as error:
                if error.code != QUERY_REJECTED or size == 1:
                    raise
                size //= 2  # a server with a lower cost limit: smaller pages
                continue
            page = data["ImagingStudyConnection"]
            for edge in page["edges"]:
                yield edge["resource"]["fhirJson"]
            cursor = page["next"]
            if cursor is None:
                return

    async def count(self, params: Params) -> int:
        data = await self.call(COUNT, **self._variables(params))
        total: int = data["ImagingStudyConnection"]["count"]
        return total

    async def create(
        self, resource: dict[str, Any], if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Creates `resource` unless its Study UID is stored; (the stored study, whether this
        call created it). A study with a Study UID is looked up first, then created without
        the condition: a conditional create that matched answers as one that created, so
        overlapping ingests would each count the study and its instances as theirs. The
        store's unique Study UID (and id) decide instead, and the one refused looks again."""
        token = study_uid_token(resource)
        if token is not None:
            found = await self._find(token)
            if found is not None:
                return found, False
        # The GraphQL input mirrors FHIR JSON, so the resource goes as it is.
        try:
            data = await self.call(CREATE, r=resource, c=None if token else if_none_exist)
        except RemoteError as error:
            duplicate = error.issue == "duplicate" and error.expression == uid_element(resource)
            if token is not None and error.code == BAD_USER_INPUT and duplicate:
                # Another ingest created the study since it was looked up: it is stored.
                found = await self._find(token)
                if found is not None:
                    return found, False
            # The server's refusal of a chosen id that is taken, as the store's own, which
            # ingest answers by letting the server choose (store/interop/ingest.py); taken
            # by a concurrent ingest of this study, that next create finds it.
            if error.code == BAD_USER_INPUT and error.expression == ID_ELEMENT:
                raise fail(BAD_USER_INPUT, ID_ELEMENT, str(error)) from None
            raise
        return data["ImagingStudyCreate"], True

    async def _find(self, token: str) -> dict[str, Any] | None:
        found: list[dict[str, Any]] = (await self.call(FIND, t=[token]))["ImagingStudyList"]
        return found[0] if found else None

    async def add_series(
        self, study_id: str, series: list[dict[str, Any]], version_id: str | None
    ) -> dict[str, Any]:
        data = await self.call(ADD_SERIES, id=study_id, s=series, v=version_id)
        study: Study = data["ImagingStudyAddSeries"]
        return study

    async def add_instances(
        self,
        study_id: str,
        series_uid: str,
        instances: list[dict[str, Any]],
        version_id: str | None,
    ) -> dict[str, Any]:
        data = await self.call(ADD_INSTANCES, id=study_id, u=series_uid, i=instances, v=version_id)
        study: Study = data["ImagingStudyAddInstances"]
        return study

    async def add_endpoints(
        self,
        study_id: str,
        study: list[dict[str, Any]],
        series: dict[str, list[dict[str, Any]]],
        version_id: str | None,
    ) -> dict[str, Any]:
        """The endpoint references the study and its series lack, appended by one update of
        the whole study under the version read; another write in between (VERSION_CONFLICT)
        makes it read again. Unchanged (all there already), nothing is written."""
        for _ in range(ATTEMPTS):
            found = (await self.call(WHOLE, id=study_id))["ImagingStudy"]
            if found is None:
                raise fail(NOT_FOUND, "ImagingStudy", f"no ImagingStudy with id '{study_id}'")
            old: Study = found["fhirJson"]
            current = old["meta"]["versionId"]
            if version_id is not None and version_id != current:
                raise fail(
                    VERSION_CONFLICT,
                    "ImagingStudy.meta.versionId",
                    f"versionId '{version_id}' is not the stored version ({current})",
                )
            new = with_endpoints(old, study, series)
            if new is old:
                return old
            try:
                data = await self.call(UPDATE, id=study_id, r=new, v=current)
            except RemoteError as error:
                if error.code == VERSION_CONFLICT and version_id is None:
                    continue
                raise
            updated: Study = data["ImagingStudyUpdate"]
            return updated
        raise fail(
            VERSION_CONFLICT,
            "ImagingStudy.meta.versionId",
            "the study changed under this write too many times; retry it",
        )
