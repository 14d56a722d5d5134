"""A DICOMweb server (a PACS) into studies: QIDO-RS lists its studies, WADO-RS metadata gives
each study's instances as DICOM JSON, and the same mapping and the same Ingest as DICOM files
write them (dicom.from_json, Ingest.add/flush): file and network give identical resources.

dicomweb-client is synchronous (requests). Its calls run in a worker thread
(asyncio.to_thread), one at a time, so the event loop that writes to the store (and, in
`serve`, answers requests) is never blocked by the network.

Incremental by construction: a study already stored gets only the series and instances it
lacks, and one with nothing new is not written at all, so its version stays. Within one
process (`--watch`), a study whose QIDO counts of series and instances are those of its last
complete sync is not fetched again. A remote failure (timeout, HTTP error, malformed JSON) is
reported for its study and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session

from store.interop import dicom
from store.interop.ingest import Ingest, IngestReport, Writer

STUDY_UID = "0020000D"
SERIES_COUNT = "00201206"  # NumberOfStudyRelatedSeries
INSTANCE_COUNT = "00201208"  # NumberOfStudyRelatedInstances
URI_SYSTEM = "urn:ietf:rfc:3986"
TIMEOUT = 30.0  # seconds per HTTP request
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# retrying logs each failed attempt with its traceback; the sync reports each study's failure.
logging.getLogger("retrying").setLevel(logging.ERROR)


class RemoteFailure(Exception):
    """The DICOMweb server did not give a usable answer: timeout, refused connection, an HTTP
    error status or a body that is not DICOM JSON. The message says which, never the body."""


def endpoint_reference(url: str) -> dict[str, Any]:
    """The Reference(Endpoint) a synced study and its series carry: where a viewer fetches the
    pixels (WADO-RS paths are <base>/studies/<Study UID>/...).

    A logical reference (identifier = the WADO-RS base URL, system urn:ietf:rfc:3986) rather
    than a contained Endpoint: R5 allows a Reference with identifier only (ref-2), our
    validator accepts it anywhere, and it does not depend on the study: a contained Endpoint
    would have to exist in every study a series is added to, including studies made earlier
    by ingest-dicom without it. Credentials in the URL are never copied."""
    parts = urlsplit(url.rstrip("/"))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    base = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return {
        "type": "Endpoint",
        "identifier": {"system": URI_SYSTEM, "value": base},
        "display": f"DICOMweb WADO-RS {base}",
    }


class Source(Protocol):
    """What the sync reads; `Server` is the real one."""

    url: str

    def studies(self, since: date | None, uid: str | None) -> list[dict[str, Any]]: ...
    def metadata(self, study_uid: str) -> list[dict[str, Any]]: ...


class Server:
    """A DICOMweb server through dicomweb-client (blocking calls: run them in a thread)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        session = create_session()
        # Proxies, .netrc and CA bundles come from the command's settings, not from
        # requests reading the environment behind the settings' back.
        session.trust_env = False
        if basic is not None:
            session.auth = basic
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        self.client = DICOMwebClient(self.url, session=session, timeout=timeout)
        # 429, 408, 503, 504 and failed connections are tried three times, 0.5 s then 1 s
        # apart (retrying waits multiplier * 2**attempt ms).
        self.client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=250)

    def studies(self, since: date | None, uid: str | None) -> list[dict[str, Any]]:
        """QIDO-RS studies (all pages): their UIDs and counts of series and instances."""
        filters: dict[str, Any] = {}
        if since is not None:
            filters["StudyDate"] = f"{since:%Y%m%d}-"
        if uid is not None:
            filters["StudyInstanceUID"] = uid
        return _checked(
            lambda: self.client.search_for_studies(
                fields=["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
                search_filters=filters,
                get_remaining=True,
            )
        )

    def metadata(self, study_uid: str) -> list[dict[str, Any]]:
        """WADO-RS metadata of one study: one DICOM JSON dataset per instance."""
        return _checked(lambda: self.client.retrieve_study_metadata(study_uid))


def _checked(call: Any) -> list[dict[str, Any]]:
    try:
        answer = call()
    except requests.JSONDecodeError:  # before RequestException: it is one, and a ValueError
        raise RemoteFailure("malformed JSON (not DICOM JSON)") from None
    except requests.Timeout:
        raise RemoteFailure("timed out") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        reason = error.response.reason if error.response is not None else ""
        raise RemoteFailure(f"HTTP {status} {reason}".rstrip()) from None
    except requests.ConnectionError as error:
        raise RemoteFailure(f"cannot connect: {type(error).__name__}") from None
    except requests.RequestException as error:
        raise RemoteFailure(f"request failed: {type(error).__name__}") from None
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise RemoteFailure("malformed JSON (not an array of DICOM JSON datasets)")
    return answer


def _first(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


@dataclass
class SyncReport:
    """What the sync did, over every poll of a run; `ingest` counts as ingest-dicom's does."""

    polls: int = 0
    studies_listed: int = 0
    studies_unchanged: int = 0  # same counts as their last sync in this run: not fetched
    instances_read: int = 0
    remote_failed: list[tuple[str, str]] = field(default_factory=list)  # (Study UID, why)
    ingest: IngestReport = field(default_factory=IngestReport)

    @property
    def ok(self) -> bool:
        return not self.remote_failed and not self.ingest.failed

    def table(self) -> str:
        report = self.ingest
        lines = [
            f"polls               {self.polls:>8}",
            f"studies listed      {self.studies_listed:>8}",
            f"studies unchanged   {self.studies_unchanged:>8}",
            f"instances read      {self.instances_read:>8}",
            f"instances skipped   {sum(report.skipped.values()):>8}",
        ]
        lines += [f"  {reason}: {count}" for reason, count in report.skipped.most_common()]
        lines += [
            f"studies created     {report.studies_created:>8}",
            f"studies updated     {report.studies_updated:>8}",
            f"instances added     {report.instances_added:>8}",
            f"instances duplicate {report.instances_duplicate:>8}",
        ]
        lines += [f"  study {uid} not read: {why}" for uid, why in self.remote_failed]
        lines += [f"  study {uid} not written: {why}" for uid, why in report.failed]
        return "\n".join(lines)


class Sync:
    """Polls of one DICOMweb server into one Writer (the store through the gate, or a
    running server); `poll()` once, or again and again for --watch."""

    def __init__(
        self,
        writer: Writer,
        source: Source,
        *,
        since: date | None = None,
        studies: Sequence[str] = (),
        timezone: str | None = None,
    ) -> None:
        for uid in studies:
            if not _UID.fullmatch(uid):
                raise ValueError(f"study {uid!r} is not a DICOM UID (digits and dots)")
        self.source = source
        self.since = since
        self.only = tuple(studies)
        self.timezone = timezone
        self.endpoint = endpoint_reference(source.url)
        self.report = SyncReport()
        self._ingest = Ingest(writer, timezone=timezone)
        self._ingest.report = self.report.ingest
        self._synced: dict[str, tuple[Any, Any]] = {}  # Study UID -> counts when synced

    async def poll(self, progress: Any = None, stop: asyncio.Event | None = None) -> None:
        """One pass over the server's studies; stops between studies once `stop` is set.
        Raises RemoteFailure when the list of studies itself cannot be read."""
        self.report.polls += 1
        listed: list[dict[str, Any]] = []
        for uid in self.only or (None,):
            listed += await asyncio.to_thread(self.source.studies, self.since, uid)
        for found in listed:
            if stop is not None and stop.is_set():
                return
            uid = _first(found, STUDY_UID)
            if not isinstance(uid, str) or not uid:
                self.report.remote_failed.append(("(unknown)", "a QIDO-RS study without a UID"))
                continue
            self.report.studies_listed += 1
            counts = (_first(found, SERIES_COUNT), _first(found, INSTANCE_COUNT))
            if counts[1] is not None and self._synced.get(uid) == counts:
                self.report.studies_unchanged += 1
            elif await self._study(uid):
                self._synced[uid] = counts
            if progress is not None:
                progress.step(1, uid)
        # A study that keeps failing is reported once, not once per poll of a long --watch.
        report = self.report
        report.remote_failed[:] = dict.fromkeys(report.remote_failed)
        report.ingest.failed[:] = dict.fromkeys(report.ingest.failed)

    async def _study(self, uid: str) -> bool:
        """Fetch and write one study; False when it was not (wholly) synced."""
        try:
            datasets = await asyncio.to_thread(self.source.metadata, uid)
        except RemoteFailure as failure:
            self.report.remote_failed.append((uid, str(failure)))
            return False
        failed = len(self.report.ingest.failed)
        for dataset in datasets:
            self.report.instances_read += 1
            try:
                header = dicom.from_json(dataset, timezone=self.timezone, endpoint=self.endpoint)
                if header.study_uid != uid:
                    raise dicom.Skip("an instance of another study in the study's metadata")
                self._ingest.add(header)
            except dicom.Skip as skip:
                self.report.ingest.skipped[str(skip)] += 1
        await self._ingest.flush()
        return len(self.report.ingest.failed) == failed

    async def watch(
        self, seconds: float, stop: asyncio.Event, progress: Any = None, on_error: Any = None
    ) -> None:
        """Poll every `seconds` until `stop` is set. A poll whose list of studies cannot be
        read goes to `on_error(failure)` and the next poll tries again."""
        while not stop.is_set():
            try:
                await self.poll(progress, stop)
            except RemoteFailure as failure:
                if on_error is not None:
                    on_error(failure)
            try:
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            except TimeoutError:
                pass
