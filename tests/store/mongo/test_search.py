"""Every search parameter against the store: a positive match, a negative one, OR, AND and a
malformed value; date prefixes against partial dates; sorting; injection-shaped values."""

from __future__ import annotations

import asyncio
import copy

import pytest

from store.fhir.outcome import BAD_USER_INPUT, StoreError
from store.mongo.indexes import INDEXES
from store.mongo.indexes import STUDIES as STUDIES_COLLECTION
from store.mongo.repository import Repository
from store.mongo.search import IDENTIFIER_SEARCHES, graphql_name, to_filter
from tests.support.search_data import IDENTIFIER_TABLE, STUDIES, TABLE


@pytest.fixture
async def loaded(store: Repository) -> Repository:
    for study in STUDIES:
        await store.create(copy.deepcopy(study))
    return store


async def ids(repo: Repository, *params: tuple[str, str], sort: str | None = None) -> list[str]:
    return [s["id"] for s in await repo.search(list(params), 100, sort=sort)]


@pytest.mark.parametrize(
    ("name", "a", "b", "none", "bad"),
    [*TABLE, *IDENTIFIER_TABLE],
    ids=[r[0] for r in [*TABLE, *IDENTIFIER_TABLE]],
)
async def test_parameter(
    loaded: Repository, name: str, a: str, b: str, none: str, bad: str
) -> None:
    assert await ids(loaded, (name, a)) == ["a"]
    assert await ids(loaded, (name, b)) == ["b"]
    assert await ids(loaded, (name, none)) == []
    assert sorted(await ids(loaded, (name, f"{a},{b}"))) == ["a", "b"]  # a comma is OR
    assert await ids(loaded, (name, a), (name, a)) == ["a"]  # a repeated parameter is AND
    assert await ids(loaded, (name, a), (name, b)) == []
    with pytest.raises(StoreError) as caught:
        await ids(loaded, (name, bad))
    assert caught.value.code == BAD_USER_INPUT
    assert caught.value.issues[0].expression == graphql_name(name)


async def test_parameters_combine_with_and(loaded: Repository) -> None:
    assert await ids(loaded, ("modality", "CT"), ("patient", "p1")) == ["a"]
    assert await ids(loaded, ("modality", "CT"), ("patient", "p2")) == []


async def test_last_updated(loaded: Repository) -> None:
    a = await loaded.get("a")
    assert a is not None
    stamp = a["meta"]["lastUpdated"]
    assert "a" in await ids(loaded, ("_lastUpdated", stamp))
    assert await ids(loaded, ("_lastUpdated", f"gt{stamp}"), ("_id", "a")) == []
    assert await ids(loaded, ("_lastUpdated", f"le{stamp}"), ("_id", "a")) == ["a"]
    assert await ids(loaded, ("_lastUpdated", "lt2000")) == []
    assert sorted(await ids(loaded, ("_lastUpdated", "ge2000"))) == ["a", "b", "c"]


async def test_reference_forms(loaded: Repository) -> None:
    for value in ("Patient/p1", "p1", "Patient/p1/_history/3"):
        assert await ids(loaded, ("subject", value)) == ["a"]
    assert await ids(loaded, ("subject", "Group/g1")) == ["c"]
    assert await ids(loaded, ("subject", "http://other.example/fhir/Patient/p1")) == []


async def test_absolute_references_match_as_written(store: Repository) -> None:
    await store.create(
        {
            "id": "abs",
            "status": "registered",
            "subject": {"reference": "http://pacs.example/fhir/Patient/9"},
        }
    )
    assert await ids(store, ("patient", "http://pacs.example/fhir/Patient/9")) == ["abs"]
    assert await ids(store, ("patient", "9")) == []


DATE_CASES = [
    # stored started, search value, matches
    ("2024-03", "2024", True),
    ("2024-03", "2024-03", True),
    ("2024-03", "2024-03-05", False),
    ("2024-03", "ne2024-03-05", True),
    ("2024-03", "ne2024", False),
    ("2024-03", "ge2024-03-05", True),
    ("2024-03", "ge2024-04", False),
    ("2024-03", "gt2024-03", False),
    ("2024-03", "gt2024-02", True),
    ("2024-03", "lt2024-03-31", True),
    ("2024-03", "lt2024-03", False),
    ("2024-03", "le2024-03", True),
    ("2024-03", "le2024-02", False),
    ("2024-03", "sa2024-02", True),
    ("2024-03", "sa2024-03-01", False),
    ("2024-03", "eb2024-04", True),
    ("2024-03", "eb2024-03-31", False),
    ("2024-03", "ap2024-03", True),
    ("2024-03", "ap2010", False),
    ("2024", "eq2024-06", False),
    ("2024", "ge2024-06", True),
    ("2024", "lt2024-06", True),
    ("2024-03-05T10:00:00+01:00", "2024-03-05", True),
    ("2024-03-05T10:00:00+01:00", "2024-03-05T09:00:00Z", True),
    ("2024-03-05T10:00:00+01:00", "2024-03-05T10:00+01:00", True),
    ("2024-03-05T10:00:00+01:00", "2024-03-05T10:00:00Z", False),
    ("2024-03-05T10:00:00+01:00", "gt2024-03-05T08:59:59Z", True),
    ("2024-03-05T10:00:00+01:00", "lt2024-03-05T09:00:00Z", False),
    ("2024-03-05T10:00:00+01:00", "le2024-03-05T09:00:00Z", True),
    ("2024-03-05T10:00:00+01:00", "ge2024-03-05T09:00:01Z", False),
    ("2024-03-05T23:30:00-05:00", "2024-03-06", True),  # 04:30 UTC on the 6th
    ("2024-03-05T23:30:00-05:00", "2024-03-05", False),
    (None, "ne2024", False),
    (None, "ge1900", False),
]


@pytest.mark.parametrize(("stored", "value", "matches"), DATE_CASES)
async def test_date_prefixes_against_partial_dates(
    store: Repository, stored: str | None, value: str, matches: bool
) -> None:
    study = {"id": "d", "status": "registered", "subject": {"reference": "Patient/p"}}
    if stored:
        study["started"] = stored
    await store.create(study)
    assert await ids(store, ("started", value)) == (["d"] if matches else [])


@pytest.mark.parametrize(
    "value",
    ["xx2024", "2024-13", "2024-02-30", "ge", "2024-03-05T25:00Z", "2024-03-05T10:00+15:00", "24"],
)
async def test_malformed_dates(store: Repository, value: str) -> None:
    with pytest.raises(StoreError) as caught:
        await ids(store, ("started", value))
    assert caught.value.issues[0].expression == "started"


@pytest.mark.parametrize(
    "value", ['{"$ne": null}', "$where", '{"$gt": ""}', ".*", "$ne", "a.b", "$regex"]
)
@pytest.mark.parametrize(
    "name", ["identifier", "subject", "_id", "modality", "series", "status", "patient"]
)
async def test_injection_shaped_values_match_literally_or_are_refused(
    loaded: Repository, name: str, value: str
) -> None:
    try:
        found = await ids(loaded, (name, value))
    except StoreError as error:
        found = [error.code]
    assert found in ([], [BAD_USER_INPUT])


async def _dated(store: Repository) -> None:
    for study_id, started in [
        ("s1", "2024-01-01"),
        ("s2", "2024-01-01"),
        ("s0", None),
        ("s3", "2023"),
        ("s4", "2024-01-01"),
    ]:
        study = {"id": study_id, "status": "registered", "subject": {"reference": "Patient/p"}}
        if started:
            study["started"] = started
        await store.create(study)
        await asyncio.sleep(0.002)  # distinct lastUpdated


async def test_sort_orders_and_ties(store: Repository) -> None:
    await _dated(store)
    assert await ids(store) == ["s1", "s2", "s4", "s3", "s0"]  # -started, ties by _id
    assert await ids(store, sort="started") == ["s3", "s1", "s2", "s4", "s0"]  # missing last
    assert await ids(store, sort="-started,-_id") == ["s4", "s2", "s1", "s3", "s0"]
    assert await ids(store, sort="_lastUpdated") == ["s1", "s2", "s0", "s3", "s4"]
    assert await ids(store, sort="-_lastUpdated") == ["s4", "s3", "s0", "s2", "s1"]
    assert await ids(store, sort="status,_id") == ["s0", "s1", "s2", "s3", "s4"]


async def test_unknown_sort_key_is_refused(store: Repository) -> None:
    with pytest.raises(StoreError) as caught:
        await ids(store, sort="-modality")
    assert caught.value.issues[0].expression == "_sort"


async def test_patient_identifier_needs_a_subject_that_says_patient(store: Repository) -> None:
    """R5's `patient` is subject.where(resolve() is Patient); :identifier resolves nothing, so
    the Reference itself must say Patient: by its type, else by its literal reference."""
    mrn = {"system": "urn:mrn", "value": "M7"}
    subjects = {
        "typed": {"type": "Patient", "identifier": mrn},  # as ingest-dicom writes it
        "literal": {"reference": "Patient/p7", "identifier": mrn},
        "absolute": {"reference": "http://ehr.example/fhir/Patient/7", "identifier": mrn},
        "group": {"type": "Group", "identifier": mrn},
        "device": {"reference": "Device/d7", "identifier": mrn},
        "uuid": {"reference": "urn:uuid:0f4c7f0e-8f5c-4d3c-9a57-2f3c1b0b6b1a", "identifier": mrn},
    }
    for study_id, subject in subjects.items():
        await store.create({"id": study_id, "status": "registered", "subject": subject})
    patients = ["absolute", "literal", "typed"]
    for value in ("urn:mrn|M7", "M7", "urn:mrn|"):
        assert sorted(await ids(store, ("patient:identifier", value))) == patients
        assert sorted(await ids(store, ("subject:identifier", value))) == sorted(subjects)
    assert await ids(store, ("patient:identifier", "|M7")) == []  # |value: no system
    assert await ids(store, ("patient:identifier", "urn:other|M7")) == []


async def test_identifier_searches_and_with_the_others(loaded: Repository) -> None:
    assert await ids(loaded, ("patient:identifier", "MRN1"), ("modality", "CT")) == ["a"]
    assert await ids(loaded, ("patient:identifier", "MRN1"), ("patient", "p2")) == []
    assert sorted(await ids(loaded, ("subject:identifier", "urn:mrn|MRN1,urn:mrn|MRN3"))) == [
        "a",
        "c",
    ]


@pytest.mark.parametrize("name", ["patient:missing", "modality:not", "identifier:identifier"])
async def test_other_modifiers_are_refused_naming_the_one_there_is(
    loaded: Repository, name: str
) -> None:
    with pytest.raises(StoreError) as caught:
        await ids(loaded, (name, "x"))
    assert caught.value.code == BAD_USER_INPUT
    assert ":identifier, on based-on, patient" in caught.value.message


@pytest.mark.parametrize("name", IDENTIFIER_SEARCHES)
def test_identifier_searches_are_served_by_the_key_index(name: str) -> None:
    """On MongoDB a search must not scan the collection: an :identifier search is one
    $elemMatch over `_srv.k` whose parameter, value and system are the multikey index's three
    keys, in order, so the server bounds all three."""
    [clause] = to_filter([(name, "urn:mrn|M1")])["$and"][1:]
    assert clause == {"_srv.k": {"$elemMatch": {"p": name, "c": "M1", "s": "urn:mrn"}}}
    [index] = [i for i in INDEXES if i.collection == STUDIES_COLLECTION and "_srv.k.p" in i.name]
    assert [field for field, _ in index.keys] == ["_srv.k.p", "_srv.k.c", "_srv.k.s"]


async def test_a_conditional_create_by_mrn(store: Repository) -> None:
    """ifNoneExist takes the REST form of the modifier, as a search string does."""
    first = {
        "status": "registered",
        "subject": {"type": "Patient", "identifier": {"system": "urn:mrn", "value": "M9"}},
    }
    made, created = await store.create(copy.deepcopy(first), "patient:identifier=urn:mrn|M9")
    assert created
    again, created = await store.create(copy.deepcopy(first), "patient:identifier=urn:mrn|M9")
    assert (again["id"], created) == (made["id"], False)
