"""Adding instances and series by one guarded update that appends (store/mongo/appends.py):
the same study, search keys and answers as the whole rules give, one update per write, and
the whole rules still deciding whatever is not a plain append. Runs on a real MongoDB too
when MONGODB_URI is set."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from store.fhir import Study, edit
from store.fhir.outcome import BAD_USER_INPUT, StoreError
from store.interop import demo
from store.mongo import appends, client
from store.mongo.events import Change
from store.mongo.keys import search_keys
from store.mongo.repository import Repository, public

SOP = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}
MR = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.4"}


def instance(n: int, sop: dict[str, str] = SOP) -> dict[str, Any]:
    return {"uid": f"1.2.826.0.88.{n}", "number": n, "sopClass": sop}


def series(uid: str, number: int, *instances: dict[str, Any]) -> dict[str, Any]:
    made = {
        "uid": uid,
        "number": number,
        "modality": {
            "coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}]
        },
    }
    return {**made, "instance": list(instances)} if instances else made


class Calls:
    """The study collection's calls made during a write."""

    def __init__(self, store: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        studies = store._studies
        names = self.names

        class Spy:
            def __getattr__(self, name: str) -> Any:
                names.append(name)
                return getattr(studies, name)

        monkeypatch.setattr(store, "_studies", Spy())


def without_time(study: Study) -> Study:
    return {**study, "meta": {k: v for k, v in study["meta"].items() if k != "lastUpdated"}}


async def stored_as_rules_make_it(store: Repository, study_id: str, expected: Study) -> None:
    """The stored document is the study the whole rules make, with the private keys a whole
    write computes."""
    doc = await store._studies.find_one({"_id": study_id})
    assert without_time(public(doc)) == without_time(expected)
    keys = search_keys(public(doc))
    assert sorted(map(str, doc["_srv"]["k"])) == sorted(map(str, keys["k"]))
    naive = [
        {k: v.replace(tzinfo=None) for k, v in lu.items()} for lu in (doc["_srv"]["lu"], keys["lu"])
    ]
    assert naive[0] == naive[1]  # as the store keeps instants (mongomock: naive UTC)
    assert doc["_srv"]["s"] == appends.summary(public(doc))


async def test_adding_instances_is_one_update_making_what_the_rules_make(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, _ = await store.create(demo.study("a", 2, 3))
    uid = old["series"][1]["uid"]
    batch = [instance(12, MR), instance(10)]  # a new SOP class: a new search key
    expected = edit.add_instances(old, uid, copy.deepcopy(batch), store.max_instances)
    calls = Calls(store, monkeypatch)
    new = await store.add_instances("a", uid, batch, "1")
    assert calls.names == ["find_one", "find_one_and_update"]
    assert new["meta"]["versionId"] == "2"
    assert without_time(new) == without_time({**expected, "meta": new["meta"]})
    await stored_as_rules_make_it(store, "a", {**expected, "meta": new["meta"]})
    assert await store.search([("dicom-class", MR["code"])], 10) == [new]
    assert await store.search([("instance", batch[0]["uid"])], 10) == [new]


async def test_adding_series_is_one_update_making_what_the_rules_make(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, _ = await store.create(demo.study("s", 1, 2))
    batch = [series("1.2.9.2", 9, instance(3), instance(2)), series("1.2.9.1", 8)]
    expected = edit.add_series(old, copy.deepcopy(batch), store.max_instances)
    calls = Calls(store, monkeypatch)
    new = await store.add_series("s", batch, None)
    assert calls.names == ["find_one", "find_one_and_update"]
    assert without_time(new) == without_time({**expected, "meta": new["meta"]})
    assert [c["code"] for m in new["modality"] for c in m["coding"]] == ["CT", "MR"]
    await stored_as_rules_make_it(store, "s", {**expected, "meta": new["meta"]})
    assert await store.search([("modality", "MR")], 10) == [new]
    assert await store.history("s", 5) == [new, old]


async def test_the_whole_rules_decide_what_is_not_a_plain_append(store: Repository) -> None:
    old, _ = await store.create(demo.study("r", 2, 2))
    first, second = (s["uid"] for s in old["series"])
    taken = old["series"][0]["instance"][0]
    # An instance that sorts before the series' last one goes in its place.
    middle = await store.add_instances("r", second, [instance(0)], None)
    assert middle["series"][1]["instance"][0]["uid"] == instance(0)["uid"]
    # A retry of instances already there changes nothing.
    again = await store.add_instances("r", first, [taken], None)
    assert again["meta"]["versionId"] == "2"
    # A UID already in another series is refused with the message it always had.
    with pytest.raises(StoreError) as refused:
        await store.add_instances("r", second, [instance(7), taken], None)
    assert refused.value.code == BAD_USER_INPUT
    assert refused.value.issues[0].expression == "ImagingStudy.series[1].instance[4].uid"
    assert "already in another series of this study" in refused.value.issues[0].diagnostics
    # An invalid instance likewise; nothing of the refused batches was written.
    with pytest.raises(StoreError) as invalid:
        await store.add_instances("r", second, [{"uid": "1.2.3", "number": "x"}], None)
    assert invalid.value.issues[0].expression.startswith("ImagingStudy.series[1].instance[3]")
    assert (await store.get("r")) == middle


async def test_an_append_publishes_the_whole_new_study(store: Repository) -> None:
    heard: list[Change] = []

    class Recorder:
        def publish(self, change: Change) -> None:
            heard.append(change)

    old, _ = await store.create(demo.study("e", 1, 40))
    store.events = Recorder()
    new = await store.add_instances("e", old["series"][0]["uid"], [instance(99)], None)
    assert [(c.action, c.version_id) for c in heard] == [("update", "2")]
    assert heard[0].resource == new
    assert len(heard[0].resource["series"][0]["instance"]) == 41


async def test_the_embedded_update_does_what_mongomock_does() -> None:
    """The embedded store's own find_one_and_update (copying only the updated paths) against
    mongomock's, on the same documents and updates."""
    _, ours = client.open_embedded("ours")
    plain = client._driver(client.open_embedded("plain")[1])
    doc = {
        "_id": "x",
        "v": "1",
        "a": [{"u": "1", "i": [{"u": "p"}]}, {"u": "2", "i": [{"u": "q"}]}],
        "k": [{"p": 1}],
    }
    update = {
        "$push": {"a.1.i": {"$each": [{"u": "r"}, {"u": "s"}]}},
        "$set": {"v": "2", "a.1.n": 3, "m.x": {"y": [1]}},
        "$addToSet": {"k": {"$each": [{"p": 1}, {"p": 2}]}},
    }
    for db in (ours, plain):
        await db["c"].insert_one(copy.deepcopy(doc))
    before = await ours["c"].find_one({"_id": "x"})
    for query in (
        {"_id": "x", "v": "1", "a.1.u": "2", "a.i.u": {"$nin": ["r", "s"]}},
        {"_id": "x", "v": "1"},  # the version moved on: nothing matches
        {"_id": "y"},
    ):
        made = await ours["c"].find_one_and_update(query, update, return_document=client.AFTER)
        expected = await plain["c"].find_one_and_update(query, update, return_document=client.AFTER)
        assert made == expected
        assert await ours["c"].find_one({}) == await plain["c"].find_one({})
    after = client.AFTER
    # The UIDs present are remembered across updates: those pushed count at once...
    for present in ("q", "s"):
        refused = {"_id": "x", "a.i.u": {"$nin": [present]}}
        assert await ours["c"].find_one_and_update(refused, update, return_document=after) is None
    assert before == {**doc}  # what was read before is not changed by the update
    # ...and a document replaced otherwise is read afresh.
    await ours["c"].replace_one({"_id": "x"}, {"_id": "x", "a": [{"u": "1", "i": [{"u": "t"}]}]})
    fresh = {"_id": "x", "a.i.u": {"$nin": ["q"]}}
    assert await ours["c"].find_one_and_update(fresh, {"$set": {"v": "3"}}, return_document=after)
    gone = {"_id": "x", "a.i.u": {"$nin": ["t"]}}
    assert not await ours["c"].find_one_and_update(
        gone, {"$set": {"v": "4"}}, return_document=after
    )


async def test_appends_mean_the_same_to_mongomocks_own_update(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update documents of appends, done by mongomock's own find_one_and_update (an
    implementation of MongoDB's operators independent of store/mongo/updates.py), leave the
    same studies as the embedded store's copy-on-write update does."""
    handle, wrapped = client.open_embedded("raw")
    raw = Repository(client._driver(wrapped))  # mongomock-motor itself, no embedded wrapper
    await raw.ensure_indexes()
    made: dict[str, list[Study]] = {}
    for repo, name in ((store, "ours"), (raw, "mongomock")):
        old, _ = await repo.create(demo.study("d", 1, 2))
        uid = old["series"][0]["uid"]
        calls = Calls(repo, monkeypatch)
        await repo.add_instances("d", uid, [instance(5, MR), instance(4)], None)
        await repo.add_series("d", [series("1.2.9.9", 7, instance(8)), series("1.2.9.8", 6)], None)
        await repo.add_instances("d", "1.2.9.8", [instance(9)], None)
        await repo.add_series("d", [series("1.2.9.7", 9)], None)
        assert calls.names.count("find_one_and_update") == 4  # each an append
        assert "replace_one" not in calls.names
        made[name] = [without_time(v) for v in await repo.history("d", 10)]
        doc = await repo._studies.find_one({"_id": "d"})
        assert doc["_srv"]["s"] == appends.summary(public(doc))
    assert made["ours"] == made["mongomock"]
    assert [v["meta"]["versionId"] for v in made["ours"]] == ["5", "4", "3", "2", "1"]
    client.close(handle)


async def test_a_refused_instance_is_named_where_it_would_stand(store: Repository) -> None:
    """The k-th instance sent to a series of n is `instance[n + k]` in the refusal: where it
    would have stood, so a client can point at the input it sent."""
    await store.create(demo.study("at", 1, 2))
    new = [demo.instance("at", 1, k) for k in (3, 4, 5)]
    del new[2]["sopClass"]
    with pytest.raises(StoreError) as caught:
        await store.add_instances("at", demo.uid("at", 1), new, None)
    assert [i.expression for i in caught.value.issues] == [
        "ImagingStudy.series[0].instance[4].sopClass"
    ]
