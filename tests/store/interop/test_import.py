"""Import of resources and Bundles: matching by Study UID and id, per-entry results, the
all-or-nothing transaction, dry runs; and export that validates as R5 with fhir.resources."""

from __future__ import annotations

import copy
import io
import itertools
import json
import time
from typing import Any

import pytest
from fhir.resources.bundle import Bundle
from fhir.resources.imagingstudy import ImagingStudy

from store.fhir.outcome import VERSION_CONFLICT, StoreError, fail
from store.interop import demo, files
from store.interop.importer import Importer
from store.mongo.repository import Repository
from tests.support.loop import LoopTicks


def bundle(kind: str, *resources: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": copy.deepcopy(r)} for r in resources],
    }


def statuses(results: list[Any]) -> list[str]:
    return [r.status for r in results]


async def test_reimporting_the_same_file_changes_nothing(store: Repository) -> None:
    xr = demo.example("ImagingStudy-example-xr.json")
    first = await Importer(store).run(xr)
    again = await Importer(store).run(xr)
    assert (statuses(first), statuses(again)) == (["created"], ["unchanged"])
    study = await store.get("example-xr")
    assert study is not None
    assert study["meta"]["versionId"] == "1"


async def test_a_study_uid_match_updates_whatever_the_id(store: Repository) -> None:
    xr = demo.example("ImagingStudy-example-xr.json")
    await Importer(store).run(xr)
    changed = {**xr, "id": "another-id", "description": "re-read"}
    [result] = await Importer(store).run(changed)
    assert (result.status, result.id) == ("updated", "example-xr")
    assert (await store.get("example-xr") or {})["description"] == "re-read"
    assert await store.get("another-id") is None


async def test_id_match_and_unknown_id(store: Repository) -> None:
    study = demo.study("plain", 1, 1)
    del study["identifier"]
    [created] = await Importer(store).run(study)
    assert (created.status, created.id) == ("created", "plain")
    [updated] = await Importer(store).run({**study, "description": "new"})
    assert updated.status == "updated"
    [refused] = await Importer(store).run({**study, "status": "registered"})
    assert refused.status == "rejected"
    assert refused.outcome["issue"][0]["code"] == "business-rule"


async def test_collection_reports_every_entry(store: Repository) -> None:
    bad = demo.study("bad", 1, 1)
    bad["series"][0]["uid"] = "1.02"
    results = await Importer(store).run(
        bundle(
            "collection",
            demo.example("ImagingStudy-example.json"),
            {"resourceType": "Patient", "id": "p"},
            bad,
            demo.example("ImagingStudy-example-xr.json"),
        )
    )
    assert statuses(results) == ["created", "rejected", "rejected", "created"]
    assert "not Patient" in results[1].outcome["issue"][0]["diagnostics"]
    # Each issue names its entry, as the client wrote it (issue 11).
    assert results[2].outcome["issue"][0]["expression"] == [
        "Bundle.entry[2].resource.series[0].uid"
    ]
    assert results[1].outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource"]
    assert await store.get("bad") is None


async def test_transaction_is_all_or_nothing(store: Repository) -> None:
    bad = {"resourceType": "ImagingStudy", "id": "t3", "status": "available"}
    results = await Importer(store).run(
        bundle("transaction", demo.study("t1", 1, 1), demo.study("t2", 1, 1), bad)
    )
    assert statuses(results) == ["rejected"] * 3
    assert "failed at entry 2" in results[0].outcome["issue"][0]["diagnostics"]
    assert await store.search([], 10) == []
    good = await Importer(store).run(
        bundle("transaction", demo.study("t1", 1, 1), demo.study("t2", 1, 1))
    )
    assert statuses(good) == ["created", "created"]


async def test_transaction_failing_part_way_undoes_its_writes(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Importer(store).run(demo.study("t2", 1, 1))

    async def conflict(*_: Any) -> None:
        raise fail(VERSION_CONFLICT, "ImagingStudy", "changed meanwhile")

    monkeypatch.setattr(store, "update", conflict)
    changed = {**demo.study("t2", 1, 1), "description": "changed"}
    results = await Importer(store).run(bundle("transaction", demo.study("t1", 1, 1), changed))
    assert statuses(results) == ["rejected", "rejected"]
    assert await store.get("t1") is None
    assert await store.search([("_id", "t1")], 10) == []
    assert (await store.get("t2") or {})["meta"]["versionId"] == "1"


async def test_dry_run_writes_nothing(store: Repository) -> None:
    results = await Importer(store, dry_run=True).run(
        bundle("batch", demo.study("d1", 1, 1), {**demo.study("d2", 1, 1), "status": "bogus"})
    )
    assert statuses(results) == ["created", "rejected"]
    assert await store.search([], 10) == []


async def test_non_bundle_types_are_refused(store: Repository) -> None:
    with pytest.raises(StoreError, match="history"):
        await Importer(store).run({"resourceType": "Bundle", "type": "history"})


@pytest.mark.parametrize("fmt", ["ndjson", "bundle"])
async def test_export_validates_as_r5_and_round_trips(store: Repository, fmt: str) -> None:
    sources = [demo.example(name) for name in demo.EXAMPLES]
    await Importer(store).run(bundle("batch", *sources, demo.study("gen", 2, 3)))
    out = io.StringIO()
    studies = (files.canonical(s) async for s in store.stream([]))
    if fmt == "ndjson":
        await files.write_ndjson(studies, out)
        exported = [json.loads(line) for line in out.getvalue().splitlines()]
    else:
        await files.write_bundle(studies, out, total=3)
        document = json.loads(out.getvalue())
        Bundle.model_validate(document)
        exported = [e["resource"] for e in document["entry"]]
    for study in exported:
        ImagingStudy.model_validate(study)
    by_id = {s["id"]: s for s in exported}
    for source in sources:
        back = {k: v for k, v in by_id[source["id"]].items() if k != "meta"}
        if "modality" not in source:  # filled in on write (README "Rules every write checks")
            back.pop("modality")
        assert back == source


async def test_a_large_import_lets_the_loop_run_between_entries(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries without a Study UID or id need no store call to be matched: without pauses,
    planning a Bundle of 30,000 of them held the event loop for seconds."""
    from store.fhir import edit
    from store.interop import importer as module

    seen: list[int] = []
    create = edit.create
    ticks = LoopTicks()

    def planned(*args: Any, **kwargs: Any) -> Any:
        seen.append(ticks.count)
        time.sleep(module.SLICE_SECONDS)  # each entry takes a whole slice
        return create(*args, **kwargs)

    monkeypatch.setattr(edit, "create", planned)
    entries = [
        {
            "resourceType": "ImagingStudy",
            "status": "registered",
            "subject": {"reference": f"Patient/p{n}"},
        }
        for n in range(20)
    ]
    async with ticks:
        results = await Importer(store, dry_run=True).run(bundle("transaction", *entries))
    assert statuses(results) == ["created"] * 20
    assert len(seen) == 20
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_the_whole_bundle_steps_after_planning_let_the_loop_run(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After planning, the checks over the whole Bundle (repeated studies) and building the
    results pause too: for 30,000 entries they held the loop for tens of milliseconds."""
    from store.interop import importer as module

    monkeypatch.setattr(module, "SLICE_SECONDS", 0.0)  # every pause lets the loop run
    seen: list[int] = []
    ticks = LoopTicks()
    planned = module.Importer._plan

    async def plan(self: Importer, index: int, resource: Any) -> Any:
        done = await planned(self, index, resource)
        seen.append(ticks.count)
        return done

    monkeypatch.setattr(module.Importer, "_plan", plan)
    entries = [
        {
            "resourceType": "ImagingStudy",
            "status": "registered",
            "subject": {"reference": "Patient/p1"},
        }
    ] * 10
    async with ticks:
        results = await Importer(store, dry_run=True).run(bundle("transaction", *entries))
        after = ticks.count - seen[-1]
    assert statuses(results) == ["created"] * 10
    # The repeats check, the results and their entry names: a turn per entry each.
    assert after >= 3 * len(entries)


async def test_a_large_entry_is_planned_off_the_loop(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from store.fhir import edit

    threads: list[str] = []
    real = edit.create

    def spy(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(edit, "create", spy)
    await Importer(store, dry_run=True).run(
        bundle("batch", demo.study("small", 1, 3), demo.study("large", 2, 600))
    )
    main = threading.main_thread().name
    assert threads[0] == main
    assert threads[1] != main
