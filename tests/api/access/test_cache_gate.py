"""The study cache behind the access gate: a study kept from one caller's read is never served
to a patient-confined caller who may not see it, through the query or through the gate."""

from __future__ import annotations

import httpx

from store.mongo.repository import Repository
from tests.support.graphql import call
from tests.support.tokens import token

OPEN = '{ ImagingStudy(id: "theirs") { id subject { reference } series { uid } } }'
WHOLE = '{ ImagingStudy(id: "theirs") { fhirJson } }'


async def test_a_kept_study_is_not_served_to_another_patients_token(
    client: httpx.AsyncClient, store: Repository
) -> None:
    p1, p2 = (token("patient/ImagingStudy.rs", patient=p) for p in ("p1", "p2"))
    admin = token("system/*.*")
    for query in (OPEN, WHOLE):
        # Read by callers who may see it, so the cache holds the study as both queries read it.
        assert (await call(client, admin, query))["data"]["ImagingStudy"] is not None
        assert (await call(client, p2, query))["data"]["ImagingStudy"] is not None
        refused = await call(client, p1, query)
        assert refused["data"]["ImagingStudy"] is None, refused
        assert "Patient/p2" not in str(refused)
    assert store.cache is not None
    assert store.cache.hits > 0
    # p1's own study is served from the cache to p1 alike.
    mine = '{ ImagingStudy(id: "mine") { subject { reference } } }'
    for _ in range(2):
        body = await call(client, p1, mine)
        assert body["data"]["ImagingStudy"]["subject"]["reference"] == "Patient/p1"
