"""Change events after committed writes: an in-process bus that subscribers read from, fed by
the repository itself (embedded store) or by a MongoDB change stream (one watcher per process,
resumed from its last token), so every worker sees every worker's writes.

A delete carries the subject and status the study had: a tombstone keeps them in `_srv.was`
(store/mongo/repository.py), which is what a MongoDB change stream's full document shows of it.

Resuming: every published change gets a position, an opaque lookup key, and the bus keeps the
last `history` changes, so a subscriber back after a disconnect replays what it missed
(`subscribe(after=...)`) and then goes on live. A position is a keyed digest (HMAC-SHA256 under
the bus's secret, 128 bits): of the change stream's resume token on MongoDB, so the same event
has the same position in every worker that shares the secret (IMAGING_CURSOR_SECRET) and a
client can resume on another worker; of a per-process random epoch and a counter on the
embedded store. It holds nothing of the study, no time and no order, so a subscriber cannot
read from the positions it is given how many other writes happened, nor forge one that means
anything: an unknown position is only an unknown key.

MongoDB resumes from this process's buffer rather than from a change stream opened with
`resumeAfter` per subscriber: that would hold one server cursor per reconnecting client, and
handing a private stream over to the shared one without a gap or a duplicate needs an order of
resume tokens that MongoDB does not document. The price is reach: a worker replays only what
it has seen since it started, at most `history` changes; beyond that the subscriber is told
(RESUME_UNAVAILABLE) and refetches."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson

from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, RESUME_UNAVAILABLE, fail
from store.mongo.client import DriverError

log = logging.getLogger("imaging.events")


@dataclass(frozen=True)
class Change:
    """One committed write."""

    action: str  # create | update | delete
    id: str
    version_id: str
    status: str | None
    resource: Study | None  # the new version; None for a delete
    # The study's subject reference (a delete: the one the study had); None for a purge.
    subject: str | None = None
    position: str = ""  # set by the bus when it publishes the change
    seq: int = field(default=0, compare=False, repr=False)  # this bus's order of publishing
    # What a change is rendered to (say, one subscription's encoded payload), keyed by the
    # renderer: every subscriber that renders it alike shares one encoding.
    renders: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def patient(self) -> str | None:
        return self.subject


def _reference(study: dict[str, Any]) -> str | None:
    subject = study.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    return reference if isinstance(reference, str) else None


def change_of(action: str, doc: dict[str, Any]) -> Change:
    """The Change a stored document stands for (a tombstone is a delete, with the subject and
    status the study had)."""
    public = {k: v for k, v in doc.items() if k not in ("_id", "_srv")}
    srv = doc.get("_srv", {})
    if srv.get("deleted"):
        was = srv.get("was") or {}  # absent on tombstones written before it was kept
        meta = doc.get("meta", {})
        return Change(
            "delete",
            str(doc["_id"]),
            meta.get("versionId", ""),
            was.get("status"),
            None,
            subject=_reference(was),
        )
    meta = doc.get("meta", {})
    return Change(
        action,
        str(doc["_id"]),
        meta.get("versionId", ""),
        public.get("status"),
        public or None,
        subject=_reference(public),
    )


def from_change_stream(event: dict[str, Any]) -> Change | None:
    """Maps a MongoDB change event on the study collection to a Change (None: not ours)."""
    kind = event.get("operationType")
    if kind == "delete":  # a purge (an undone create): the study never was
        return Change("delete", str(event["documentKey"]["_id"]), "", None, None)
    doc = event.get("fullDocument")
    if kind not in ("insert", "replace", "update") or not doc:
        return None
    if kind == "update" and _private_only(event.get("updateDescription") or {}):
        return None  # the search keys brought up to date (store/mongo/rekey.py): no change
    return change_of("create" if kind == "insert" else "update", doc)


def _private_only(description: dict[str, Any]) -> bool:
    """Whether an update changed only the private `_srv` keys, not the study."""
    changed = [*(description.get("updatedFields") or {}), *(description.get("removedFields") or ())]
    return bool(changed) and all(f == "_srv" or f.startswith("_srv.") for f in changed)


class Overrun(Exception):
    """The subscriber fell more than `backlog` events behind and was dropped."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        super().__init__(f"the subscriber fell more than {backlog} events behind")


# 16 bytes of HMAC-SHA256 in unpadded base64url: what every position looks like.
_POSITION = re.compile(r"[A-Za-z0-9_-]{22}")
# Kept changes hold whole study versions: a bound on their encoded size as well as their
# number keeps a burst of writes to large studies (each event carries the whole study, and a
# study's bulk may be anywhere: instances, contained resources, extensions) from holding
# gigabytes. About four studies at the default instance cap.
HISTORY_BYTES = 64 * 1024 * 1024


def _weight(change: Change) -> int:
    """What a kept change costs: the bytes of its study as JSON (8 ms for a 50,000-instance
    study, next to the hundreds its write took), and 1 for the change itself."""
    return 1 + (len(orjson.dumps(change.resource)) if change.resource else 0)


class Bus:
    """Fan-out of Changes to every current subscriber. A subscriber that falls more than
    `backlog` events behind is dropped rather than slowing the writers down: its iterator
    raises Overrun. The last `history` changes are kept for subscribers that resume."""

    def __init__(
        self,
        backlog: int = 1_000,
        history: int = 1_000,
        secret: bytes | None = None,
        history_bytes: int = HISTORY_BYTES,
    ) -> None:
        self.backlog = backlog
        self.history = history
        self.history_bytes = history_bytes
        self._weight = 0  # of the changes in _recent
        self._queues: set[asyncio.Queue[Change | None]] = set()
        # Without a shared secret, positions are this process's alone (the embedded store).
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._epoch = secrets.token_hex(16)
        self._seq = 0
        self._recent: deque[Change] = deque()
        self._seqs: dict[str, int] = {}  # position -> seq of the changes in _recent

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def _position(self, identity: str) -> str:
        digest = hmac.new(
            self._secret, b"imaging-api event position\0" + identity.encode(), hashlib.sha256
        ).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def publish(self, change: Change, identity: str | None = None) -> None:
        """Gives the change its position (from `identity`, the same in every process that
        sees this event, or else from this bus's own count), keeps it for resuming
        subscribers and hands it to every current one."""
        self._seq += 1
        position = self._position(
            identity if identity is not None else f"{self._epoch}:{self._seq}"
        )
        change = dataclasses.replace(change, position=position, seq=self._seq)
        if self.history > 0:
            self._keep(change)
        for queue in list(self._queues):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                # What it has not read is no use to it now (it has to catch up by reading
                # anyway), so its memory goes at once and it hears of the drop first.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    def _keep(self, change: Change) -> None:
        """Keeps the change for resuming, dropping the oldest beyond `history` changes or
        `history_bytes` bytes of studies (the newest change is always kept)."""
        self._recent.append(change)
        self._seqs[change.position] = change.seq
        self._weight += _weight(change)
        while len(self._recent) > 1 and (
            len(self._recent) > self.history or self._weight > self.history_bytes
        ):
            gone = self._recent.popleft()
            self._weight -= _weight(gone)
            if self._seqs.get(gone.position) == gone.seq:  # not a later copy's entry
                del self._seqs[gone.position]

    def since(self, after: str) -> list[Change]:
        """The kept changes published after the one at position `after`, oldest first. A
        StoreError when `after` is not a position (BAD_USER_INPUT) or is not among the kept
        changes (RESUME_UNAVAILABLE: too old, from before a restart, or never given out)."""
        if not _POSITION.fullmatch(after):
            raise fail(
                BAD_USER_INPUT,
                "after",
                "after must be the position of an event this "
                "subscription delivered (an opaque string of 22 characters)",
            )
        seq = self._seqs.get(after)
        if seq is None:
            raise fail(
                RESUME_UNAVAILABLE,
                "after",
                "the events after this position can no "
                f"longer be replayed (this server keeps the last {self.history}, fewer "
                "when they carry large studies, since it started): read the studies "
                "again, then subscribe without after",
            )
        return list(islice(self._recent, seq - self._recent[0].seq + 1, None))

    @asynccontextmanager
    async def subscribe(self, after: str | None = None) -> AsyncIterator[AsyncIterator[Change]]:
        """The changes from now on; with `after`, first those published after that position
        (see `since`), then the live ones, with no gap and no duplicate."""
        # Replay and queue are taken with no await between them, so no change published in
        # the meantime can fall between the two; the live ones up to the last replayed are
        # dropped all the same, so the order holds whatever the scheduling.
        replay = [] if after is None else self.since(after)
        last = replay[-1].seq if replay else self._seq
        queue: asyncio.Queue[Change | None] = asyncio.Queue(self.backlog)
        self._queues.add(queue)

        async def changes() -> AsyncIterator[Change]:
            for replayed in replay:
                yield replayed
            while (live := await queue.get()) is not None:
                if live.seq > last:
                    yield live
            raise Overrun(self.backlog)

        try:
            yield changes()
        finally:
            self._queues.discard(queue)


class ChangeStreamFeeder:
    """Watches the study collection and publishes each change; resumes after errors."""

    def __init__(self, collection: Any, bus: Bus, retry_seconds: float = 1.0) -> None:
        self.collection = collection
        self.bus = bus
        self.retry_seconds = retry_seconds
        self.resume_token: Any = None

    async def run(self) -> None:
        while True:
            try:
                async with self.collection.watch(
                    full_document="updateLookup", resume_after=self.resume_token
                ) as stream:
                    async for event in stream:
                        self.resume_token = token = event["_id"]
                        change = from_change_stream(event)
                        if change is not None:
                            # The resume token names the event alike in every process.
                            identity = token.get("_data") if isinstance(token, dict) else None
                            self.bus.publish(change, None if identity is None else str(identity))
            except DriverError as error:
                log.warning("change stream interrupted (%s); resuming", type(error).__name__)
                await asyncio.sleep(self.retry_seconds)
