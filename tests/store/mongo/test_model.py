"""A model-checked write path: hypothesis drives random sequences of every write, with right and
wrong versionIds, against a model written here, and checks after every step that the store
agrees with the model and that a refused step changed nothing."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from store.fhir.outcome import StoreError
from store.interop import demo
from store.mongo import client
from store.mongo.repository import Repository

IDS = ["s0", "s1", "s2"]
# README "Status lifecycle", written out here rather than imported: the model must not share the
# store's table, or a wrong table would pass.
TRANSITIONS = {
    "registered": {"available", "cancelled", "entered-in-error"},
    "available": {"cancelled", "entered-in-error"},
    "cancelled": {"entered-in-error"},
    "entered-in-error": set(),
    "unknown": {"registered", "available", "cancelled", "entered-in-error"},
}
STATUSES = list(TRANSITIONS)
SERIES = [demo.uid("m", n) for n in range(4)]
INSTANCES = [f"{series}.{n}" for series in SERIES for n in range(1, 5)]


class Model:
    """What one study should be: status, series -> instance UIDs, version, history length."""

    def __init__(self, status: str, series: dict[str, set[str]]) -> None:
        self.status = status
        self.series = series
        self.version = 1
        self.versions = 1  # history length: every accepted write adds one
        self.deleted = False

    def instances(self) -> int:
        return sum(len(uids) for uids in self.series.values())


def resource(study_id: str, status: str, series: dict[str, set[str]]) -> dict[str, Any]:
    return {
        "id": study_id,
        "status": status,
        "subject": {"reference": "Patient/p"},
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:1.2.{IDS.index(study_id) + 1}"}
        ],
        "series": [
            {
                "uid": uid,
                "modality": {"coding": [{"code": "CT"}]},
                "instance": [instance(i) for i in sorted(uids)],
            }
            if uids
            else {"uid": uid, "modality": {"coding": [{"code": "CT"}]}}
            for uid, uids in sorted(series.items())
        ]
        or None,
    }


def instance(uid: str) -> dict[str, Any]:
    return {"uid": uid, "sopClass": {"code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}


def clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class WritePath(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.handle, db = client.open_embedded("model")
        self.repo = Repository(db)
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        client.close(self.handle)
        self.loop.close()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def live(self, study_id: str) -> Model | None:
        found = self.model.get(study_id)
        return found if found and not found.deleted else None

    def attempt(self, study_id: str, write: Any, accepted: bool, change: Any = None) -> None:
        """Runs `write`; it must succeed exactly when the model says so, and a refusal must
        leave the stored study as it was."""
        before = self.run(self.repo.get(study_id))
        try:
            self.run(write)
        except StoreError:
            assert not accepted, "the store refused a write the model accepts"
            assert self.run(self.repo.get(study_id)) == before, "a refused write changed it"
            return
        assert accepted, "the store accepted a write the model refuses"
        if change is not None:
            change()

    def version(self, study_id: str, right: bool) -> str | None:
        model = self.model[study_id]
        return str(model.version) if right else str(model.version + 7)

    @rule(
        study_id=st.sampled_from(IDS),
        status=st.sampled_from(STATUSES),
        picks=st.sets(st.sampled_from(INSTANCES), max_size=4),
        conditional=st.booleans(),
    )
    def create(self, study_id: str, status: str, picks: set[str], conditional: bool) -> None:
        series: dict[str, set[str]] = {}
        for uid in picks:
            series.setdefault(uid.rsplit(".", 1)[0], set()).add(uid)
        existing = self.live(study_id)
        accepted = (
            existing is None
            and status != "entered-in-error"
            and not (status == "available" and not picks)
        )
        condition = (
            f"identifier=urn:dicom:uid|urn:oid:1.2.{IDS.index(study_id) + 1}"
            if conditional
            else None
        )
        if conditional and existing is not None:
            # Returns the match (or refuses a resource that is invalid on its own terms);
            # either way nothing changes.
            before = self.run(self.repo.get(study_id))
            try:
                self.run(self.repo.create(clean(resource(study_id, status, series)), condition))
            except StoreError:
                pass
            assert self.run(self.repo.get(study_id)) == before
            return

        def change() -> None:
            old = self.model.get(study_id)
            model = self.model[study_id] = Model(status, series)
            if old is not None:  # a deleted id used again: its versions go on
                model.version, model.versions = old.version + 1, old.versions + 1

        self.attempt(
            study_id,
            self.repo.create(clean(resource(study_id, status, series)), condition),
            accepted,
            change,
        )

    @precondition(lambda self: any(self.live(i) for i in IDS))
    @rule(data=st.data(), status=st.sampled_from(STATUSES), right=st.booleans())
    def set_status(self, data: st.DataObject, status: str, right: bool) -> None:
        study_id = data.draw(st.sampled_from([i for i in IDS if self.live(i)]))
        model = self.model[study_id]
        no_op = status == model.status
        allowed = no_op or (
            status in TRANSITIONS[model.status]
            and not (status == "available" and model.instances() == 0)
        )
        accepted = right and allowed

        def change() -> None:
            if not no_op:
                model.status, model.version, model.versions = (
                    status,
                    model.version + 1,
                    model.versions + 1,
                )

        self.attempt(
            study_id,
            self.repo.set_status(study_id, status, self.version(study_id, right)),
            accepted,
            change,
        )

    @precondition(lambda self: any(self.live(i) for i in IDS))
    @rule(
        data=st.data(),
        series=st.sampled_from(SERIES),
        picks=st.sets(st.sampled_from(range(1, 5)), min_size=1, max_size=3),
        right=st.booleans(),
    )
    def add_instances(self, data: st.DataObject, series: str, picks: set[int], right: bool) -> None:
        study_id = data.draw(st.sampled_from([i for i in IDS if self.live(i)]))
        model = self.model[study_id]
        uids = {f"{series}.{n}" for n in picks}
        new = uids - model.series.get(series, set())
        accepted = (
            right
            and series in model.series
            and model.status != "entered-in-error"
            and not (new and model.status == "cancelled")
        )

        def change() -> None:
            if new:
                model.series[series] |= new
                model.version, model.versions = model.version + 1, model.versions + 1

        self.attempt(
            study_id,
            self.repo.add_instances(
                study_id, series, [instance(u) for u in sorted(uids)], self.version(study_id, right)
            ),
            accepted,
            change,
        )

    @precondition(lambda self: any(self.live(i) for i in IDS))
    @rule(data=st.data(), series=st.sampled_from(SERIES), right=st.booleans())
    def add_series(self, data: st.DataObject, series: str, right: bool) -> None:
        study_id = data.draw(st.sampled_from([i for i in IDS if self.live(i)]))
        model = self.model[study_id]
        accepted = (
            right
            and series not in model.series
            and model.status not in ("entered-in-error", "cancelled")
        )

        def change() -> None:
            model.series[series] = set()
            model.version, model.versions = model.version + 1, model.versions + 1

        self.attempt(
            study_id,
            self.repo.add_series(
                study_id,
                [{"uid": series, "modality": {"coding": [{"code": "CT"}]}}],
                self.version(study_id, right),
            ),
            accepted,
            change,
        )

    @precondition(lambda self: any(self.live(i) for i in IDS))
    @rule(data=st.data(), right=st.booleans())
    def remove_series(self, data: st.DataObject, right: bool) -> None:
        study_id = data.draw(st.sampled_from([i for i in IDS if self.live(i)]))
        model = self.model[study_id]
        series = data.draw(st.sampled_from(SERIES))
        left = model.instances() - len(model.series.get(series, ()))
        accepted = (
            right
            and series in model.series
            and model.status != "entered-in-error"
            and not (model.status == "available" and left == 0)
        )

        def change() -> None:
            del model.series[series]
            model.version, model.versions = model.version + 1, model.versions + 1

        self.attempt(
            study_id,
            self.repo.remove_series(study_id, [series], self.version(study_id, right)),
            accepted,
            change,
        )

    @precondition(lambda self: any(self.live(i) for i in IDS))
    @rule(data=st.data(), right=st.booleans())
    def delete(self, data: st.DataObject, right: bool) -> None:
        study_id = data.draw(st.sampled_from([i for i in IDS if self.live(i)]))
        model = self.model[study_id]

        def change() -> None:
            model.deleted = True
            model.version += 1  # the tombstone is a version; history lists live ones only

        self.attempt(
            study_id, self.repo.delete(study_id, self.version(study_id, right)), right, change
        )

    @invariant()
    def store_equals_model(self) -> None:
        for study_id in IDS:
            stored = self.run(self.repo.get(study_id))
            model = self.live(study_id)
            if model is None:
                assert stored is None
                continue
            assert stored is not None
            listed = {
                s["uid"]: {i["uid"] for i in s.get("instance", ())}
                for s in stored.get("series", ())
            }
            assert (stored["status"], listed) == (model.status, model.series)
            assert stored["meta"]["versionId"] == str(model.version)
            assert stored["numberOfSeries"] >= len(listed)
            total = sum(len(uids) for uids in listed.values())
            assert stored["numberOfInstances"] >= total
            everywhere = [i["uid"] for s in stored.get("series", ()) for i in s.get("instance", ())]
            assert len(everywhere) == len(set(everywhere))
            history = self.run(self.repo.history(study_id, 1000))
            assert len(history) == model.versions
            assert copy.deepcopy(history[0]) == stored


TestWritePath = pytest.mark.slow(WritePath.TestCase)
TestWritePath.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
