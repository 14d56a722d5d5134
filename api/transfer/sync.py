"""`imaging-api sync-dicomweb`: a DICOMweb server into a target, once or every --watch seconds,
with the progress line and the summary of ingest-dicom. The reading and mapping are
store/interop/dicomweb.py's; this module holds what the command adds: its options, the
credentials from the settings, the signals that end a watch and the exit status."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from datetime import date

from api.settings import Settings
from api.transfer.progress import Progress
from store.interop.dicom import offset
from store.interop.dicomweb import RemoteFailure, Server, Source, Sync
from store.interop.ingest import Writer


@dataclass(frozen=True)
class SyncOptions:
    """The command's options, checked."""

    since: date | None = None
    studies: tuple[str, ...] = ()
    watch: float | None = None
    timezone: str | None = None

    @classmethod
    def parse(
        cls, since: str | None, studies: list[str], watch: float | None, timezone: str | None
    ) -> SyncOptions:
        """The options from their command-line text; ValueError says which is wrong."""
        try:
            day = date.fromisoformat(since) if since else None
        except ValueError:
            raise ValueError(f"--since must be a date like 2024-01-31, not {since!r}") from None
        if watch is not None and not 0 < watch <= 86_400:
            raise ValueError("--watch must be a number of seconds from 0 to 86400 (one day)")
        zone = offset(timezone) if timezone else None
        if timezone and zone is None:
            raise ValueError("--timezone must look like +01:00")
        return cls(day, tuple(studies), watch, zone)


def server(settings: Settings, url: str) -> Server:
    """The DICOMweb server at `url`, with the credentials the settings give."""
    basic = None
    if settings.dicomweb_user and settings.dicomweb_password:
        basic = (settings.dicomweb_user, settings.dicomweb_password)
    return Server(url, token=settings.dicomweb_token, basic=basic)


async def run_sync(
    where: Writer,
    settings: Settings,
    url: str,
    options: SyncOptions,
    source: Source | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Sync once, or until SIGINT/SIGTERM (or `stop`) with --watch; print the summary.
    0: all synced; 1: some study failed (listed); 2: the list of studies could not be read."""
    try:
        sync = Sync(
            where,
            source or server(settings, url),
            since=options.since,
            studies=options.studies,
            timezone=options.timezone,
        )
    except ValueError as error:
        print(f"imaging-api sync-dicomweb: {error}", file=sys.stderr)
        return 2
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:  # finish the study in hand, then the summary
        loop.add_signal_handler(number, stop.set)
    progress = Progress("studies")

    def failed(failure: RemoteFailure) -> None:
        progress.clear()
        print(f"cannot list the studies of {sync.source.url}: {failure}", file=sys.stderr)

    status = 0
    try:
        if options.watch is None:
            await sync.poll(progress, stop)
        else:
            await sync.watch(options.watch, stop, progress, failed)
    except RemoteFailure as failure:
        failed(failure)
        status = 2
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        progress.done()
        print(sync.report.table(), flush=True)
    return status or (0 if sync.report.ok else 1)
