"""Keyset paging: every study that matched throughout comes exactly once while others insert
and delete between pages; `previous` walks back; tampered or foreign cursors are refused."""

from __future__ import annotations

import random

import pytest

from store.fhir.outcome import BAD_USER_INPUT, StoreError
from store.mongo.repository import Page, Repository


def _study(study_id: str, started: str | None, patient: str = "p") -> dict[str, object]:
    study: dict[str, object] = {
        "id": study_id,
        "status": "registered",
        "subject": {"reference": f"Patient/{patient}"},
    }
    if started:
        study["started"] = started
    return study


def _started(rng: random.Random) -> str | None:
    # Few distinct values, so ties on the sort key are common and _id must break them.
    return rng.choice([None, "2023", "2024-01", "2024-01-05", "2024-01-05T10:00:00Z"])


async def _walk(
    repo: Repository,
    params: list[tuple[str, str]],
    count: int,
    sort: str | None = None,
    between: object = None,
) -> list[Page]:
    pages = [await repo.page(params, count, sort=sort, fields=None)]
    while pages[-1].next:
        if callable(between):
            await between(len(pages))
        pages.append(await repo.page(params, count, pages[-1].next, sort, fields=None))
    return pages


def _ids(pages: list[Page]) -> list[str]:
    return [s["id"] for page in pages for s in page.studies]


@pytest.mark.parametrize("sort", [None, "started", "-_lastUpdated", "status,-_id"])
async def test_walking_next_under_concurrent_inserts_and_deletes(
    store: Repository, sort: str | None
) -> None:
    rng = random.Random(7)
    kept = [f"k{n:02d}" for n in range(40)]
    for study_id in kept:
        await store.create(_study(study_id, _started(rng)))
    temp = [f"t{n:02d}" for n in range(20)]
    for study_id in temp:
        await store.create(_study(study_id, _started(rng)))

    async def churn(page_number: int) -> None:
        for n in range(3):
            await store.create(_study(f"new-{page_number}-{n}", _started(rng)))
        if temp:
            await store.delete(temp.pop(rng.randrange(len(temp))), None)

    seen = _ids(await _walk(store, [], 6, sort, churn))
    assert len(seen) == len(set(seen)), "a study came twice"
    assert set(kept) <= set(seen), "a study that existed throughout was missed"


async def test_previous_walks_back_and_pages_carry_totals(store: Repository) -> None:
    for n in range(23):
        await store.create(_study(f"s{n:02d}", f"2024-01-{n + 1:02d}"))
    pages = await _walk(store, [], 5)
    assert [len(p.studies) for p in pages] == [5, 5, 5, 5, 3]
    assert [p.offset for p in pages] == [0, 5, 10, 15, 20]
    assert {p.total for p in pages} == {23}
    assert pages[0].previous is None
    assert pages[-1].next is None
    back = pages[-1]
    walked = [back]
    while back.previous:
        back = await store.page([], 5, back.previous, fields=None)
        walked.append(back)
    assert [[s["id"] for s in p.studies] for p in walked[::-1]] == [
        [s["id"] for s in p.studies] for p in pages
    ]
    assert walked[-1].offset == 0
    last = await store.page([], 5, pages[0].last, fields=None)
    assert [s["id"] for s in last.studies] == ["s04", "s03", "s02", "s01", "s00"]
    assert last.offset == 18
    assert last.next is None
    first = await store.page([], 5, last.first, fields=None)
    assert first.studies == pages[0].studies


async def test_tampered_and_foreign_cursors_are_refused(store: Repository) -> None:
    for n in range(4):
        await store.create(_study(f"s{n}", None, patient="p" if n % 2 else "q"))
    page = await store.page([], 1, fields=None)
    assert page.next is not None
    tampered = page.next[:-3] + ("AAA" if page.next[-3:] != "AAA" else "BBB")
    for cursor in (tampered, "not-a-cursor", "", page.next[:10]):
        with pytest.raises(StoreError) as caught:
            await store.page([], 1, cursor or "x", fields=None)
        assert caught.value.code == BAD_USER_INPUT
        assert caught.value.issues[0].expression == "_cursor"
    with pytest.raises(StoreError) as caught:
        await store.page([("patient", "p")], 1, page.next, fields=None)
    assert "another query" in caught.value.message
    with pytest.raises(StoreError):
        await store.page([], 1, page.next, sort="_id", fields=None)


async def test_sort_keys_only_page_reads_no_study_elements(store: Repository) -> None:
    await store.create(_study("s", "2024"))
    page = await store.page([], 5)
    assert page.studies == [{"id": "s", "resourceType": "ImagingStudy"}]
