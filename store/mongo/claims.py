"""Race-safe conditional create (If-None-Exist) without transactions: a claim document keyed
by the condition decides which of several concurrent creators inserts; the others wait for its
study and return it. A claim whose study never appears, or no longer matches, goes stale and is
taken over."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, VERSION_CONFLICT, fail
from store.mongo import search
from store.mongo.client import Database, DuplicateKey

CLAIM_TTL = timedelta(seconds=5)  # how long a claim may wait for its study


class Claims:
    def __init__(self, db: Database, studies: Any, attempts: int) -> None:
        self._claims = db["imaging_study_claims"]
        self._studies = studies
        self._attempts = attempts

    async def create_once(
        self,
        study_id: str,
        condition: str,
        insert: Callable[[], Awaitable[Study]],
        within: Sequence[tuple[str, str]] = (),
    ) -> tuple[Study | None, bool]:
        """(existing match, False), or (the study `insert` made, True). `within` narrows the
        search to what the caller may see (a patient): nothing else can match."""
        params = [*search.parse_query(condition, "ifNoneExist"), *within]
        query = search.to_filter(params, "ifNoneExist")
        key = search.params_key(params)
        for _ in range(self._attempts):
            found = await self._studies.find(query).limit(2).to_list(length=2)
            if len(found) > 1:
                raise fail(
                    BAD_USER_INPUT,
                    "ifNoneExist",
                    f"'{condition}' matches more than one"
                    " study; a conditional create needs at most one match",
                )
            if found:
                return found[0], False
            try:
                await self._claims.insert_one(
                    {"_id": key, "study": study_id, "at": datetime.now(UTC)}
                )
            except DuplicateKey:
                await self._contend(key, query)
                continue
            try:
                return await insert(), True
            except Exception:
                await self._claims.delete_one({"_id": key, "study": study_id})
                raise
        raise fail(
            VERSION_CONFLICT, "ifNoneExist", "too many concurrent conditional creates; retry"
        )

    async def _contend(self, key: str, query: dict[str, Any]) -> None:
        """Another creator holds the claim: wait while it is fresh, take it over when stale."""
        claim = await self._claims.find_one({"_id": key})
        if claim is None:
            return
        holder = await self._studies.find_one({"_id": claim["study"]}, {"_id": 1})
        if holder is None:
            at = claim["at"] if claim["at"].tzinfo else claim["at"].replace(tzinfo=UTC)
            if datetime.now(UTC) - at < CLAIM_TTL:
                await asyncio.sleep(0.005)
                return
        elif await self._studies.count_documents({"$and": [query, {"_id": claim["study"]}]}):
            return  # the holder's study exists and matches: the next search finds it
        await self._claims.delete_one({"_id": key, "study": claim["study"]})
