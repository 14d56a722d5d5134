"""Primitive extensions and element ids (R5 JSON `_name` siblings, json.html#primitive):
accepted and validated on every primitive element, stored, read as `_name` fields as FHIR
GraphQL names them, and kept exactly through create, update, import and export."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from fhir.resources.imagingstudy import ImagingStudy

from api.graphql.context import Context
from api.graphql.schema import build_schema
from api.settings import Settings
from store.fhir.validate import validate
from store.interop import demo, files
from store.interop.importer import Importer
from store.mongo.repository import Repository
from tests.support.extensions import EXT, NOTE
from tests.support.graphql import Gql, expressions

PROFILE = "http://example.org/fhir/StructureDefinition/imaging"


def decorated(name: str) -> dict[str, Any]:
    """An official example with ids and extensions on single and repeating primitives, at
    the root, in datatypes, in series and instances; one repeating value known only by its
    extension."""
    study = demo.example(name)
    study["_status"] = {"id": "st-1", "extension": EXT}
    study["_started"] = {"extension": EXT}
    study["_description"] = {"id": "no-value"}  # an element with an id and no value
    study["meta"] = {"profile": [PROFILE, None], "_profile": [None, {"extension": EXT}]}
    study["identifier"][0]["_value"] = {"id": "uid-value"}
    study["subject"]["_reference"] = {"extension": EXT}
    series = study["series"][0]
    series["_uid"] = {"extension": EXT}
    series["modality"]["coding"][0]["_code"] = {"id": "code-1"}
    series["instance"][0]["_title"] = {"extension": EXT}
    series["instance"][0]["_number"] = {"id": "n-1"}
    return study


def stored_form(source: dict[str, Any], back: dict[str, Any]) -> dict[str, Any]:
    """`back` as comparable with `source`: meta's server-owned elements out, and `modality`,
    which the server fills in when absent."""
    back = copy.deepcopy(back)
    for key in ("versionId", "lastUpdated"):
        back["meta"].pop(key, None)
    if "modality" not in source:
        back.pop("modality", None)
    return back


# -- the rules ------------------------------------------------------------------------------


def issues(study: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.expression, i.diagnostics) for i in validate(study, 50_000)]


@pytest.mark.parametrize("name", demo.EXAMPLES)
def test_primitive_extensions_are_valid_r5(name: str) -> None:
    study = decorated(name)
    assert issues(study) == []
    ImagingStudy.model_validate(study)  # and so says fhir.resources


def test_a_primitive_value_of_an_extension_takes_extensions_too() -> None:
    study = demo.example("ImagingStudy-example.json")
    study["extension"] = [
        {"url": NOTE, "valueCode": "a", "_valueCode": {"id": "c"}},
        {"url": NOTE, "_valueString": {"extension": EXT}},
    ]
    assert issues(study) == []


BAD = [
    # (where, what, the element the error names, words of the rule)
    ("root", {"_foo": {"id": "a"}}, "ImagingStudy._foo", "no element 'foo'"),
    (
        "root",
        {"_started": {"value": "2024"}},
        "ImagingStudy._started.value",
        "only id and extension",
    ),
    ("root", {"_started": {}}, "ImagingStudy._started", "must not be empty"),
    ("root", {"_started": "2024"}, "ImagingStudy._started", "must be an object"),
    ("root", {"_started": [{"id": "a"}]}, "ImagingStudy._started", "not a list"),
    ("root", {"_started": {"id": 7}}, "ImagingStudy._started.id", "must be a string"),
    (
        "root",
        {"_started": {"extension": [{"url": NOTE}]}},
        "ImagingStudy._started.extension[0]",
        "needs a value[x]",
    ),
    # R5 types every id as System.String: no id or extensions, so `_id` is no R5 JSON.
    ("root", {"_id": {"id": "a"}}, "ImagingStudy._id", "not a primitive element"),
    ("root", {"_srv": {"deleted": False}}, "ImagingStudy._srv", "no element 'srv'"),
    ("root", {"_subject": {"id": "a"}}, "ImagingStudy._subject", "not a primitive element"),
    ("series", {"_id": {"id": "a"}}, "ImagingStudy.series[0]._id", "not a primitive element"),
    ("text", {"_div": {"id": "a"}}, "ImagingStudy.text._div", "not a primitive element"),
    (
        "extension",
        {"_url": {"id": "a"}},
        "ImagingStudy.extension[0]._url",
        "not a primitive element",
    ),
    (
        "meta",
        {"profile": [PROFILE], "_profile": {"id": "a"}},
        "ImagingStudy.meta._profile",
        "aligned by position",
    ),
    (
        "meta",
        {"profile": [PROFILE], "_profile": [None, {"id": "a"}]},
        "ImagingStudy.meta._profile",
        "as many items as profile (1)",
    ),
    (
        "meta",
        {"profile": [PROFILE, None], "_profile": [None, None]},
        "ImagingStudy.meta._profile[1]",
        "null here and in profile[1]",
    ),
    (
        "meta",
        {"profile": [PROFILE, None]},
        "ImagingStudy.meta.profile[1]",
        "unless _profile[1] carries",
    ),
    ("meta", {"_profile": []}, "ImagingStudy.meta._profile", "empty list"),
]


@pytest.mark.parametrize(("where", "change", "element", "rule"), BAD)
def test_bad_primitive_siblings_name_the_element_and_the_rule(
    where: str, change: dict[str, Any], element: str, rule: str
) -> None:
    study = demo.example("ImagingStudy-example-xr.json")
    target = {
        "root": study,
        "series": study["series"][0],
        "text": study["text"],
        "meta": study.setdefault("meta", {}),
        "extension": study.setdefault("extension", [{"url": NOTE, "valueCode": "a"}])[0],
    }
    target[where].update(copy.deepcopy(change))
    found = issues(study)
    assert any(e == element and rule in d for e, d in found), found


@pytest.mark.parametrize(
    ("path", "name"),
    [((), "status"), (("series", 0), "uid"), (("series", 0, "instance", 0), "uid")],
)
def test_an_extension_does_not_replace_a_required_value(path: tuple[Any, ...], name: str) -> None:
    """R5 lets a mandatory element be present with extensions alone; this server keys and
    lifecycles on these values, so it refuses that, and says so."""
    study = demo.example("ImagingStudy-example-xr.json")
    target: Any = study
    for step in path:
        target = target[step]
    del target[name]
    target[f"_{name}"] = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }
    [(element, rule)] = issues(study)
    assert element.endswith(f".{name}")
    assert f"an id or extension in _{name} does not replace its value" in rule


# -- writes and reads through GraphQL -------------------------------------------------------

CREATE = """mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id fhirJson } }"""
UPDATE = """mutation($id: ID!, $r: ImagingStudyInput!) {
  ImagingStudyUpdate(id: $id, res: $r) { fhirJson } }"""
READ = """query($id: ID!) { ImagingStudy(id: $id) {
  status _status { id extension { url valueString } }
  started _started { extension { valueString } }
  description _description { id }
  meta { profile _profile { id extension { url valueString } } }
  identifier { value _value { id } }
  subject { _reference { extension { url } } }
  series { uid _uid { extension { valueString } } modality { coding { _code { id } } }
    instance(_count: 1) { number _number { id } _title { extension { valueString } } } } } }"""


@pytest.mark.parametrize("name", demo.EXAMPLES)
async def test_create_update_and_read_keep_them_exactly(gql: Gql, name: str) -> None:
    source = decorated(name)
    created = await gql(CREATE, r=source)
    assert "errors" not in created, created
    study = created["data"]["ImagingStudyCreate"]["fhirJson"]
    assert stored_form(source, study) == source
    ImagingStudy.model_validate(study)

    changed = copy.deepcopy(source)
    changed["_started"] = {"id": "changed", "extension": EXT}
    changed["meta"] = {"profile": [None, PROFILE], "_profile": [{"id": "p0"}, None]}
    updated = await gql(UPDATE, id=source["id"], r=changed)
    assert "errors" not in updated, updated
    assert stored_form(changed, updated["data"]["ImagingStudyUpdate"]["fhirJson"]) == changed

    read = (await gql(READ, id=source["id"]))["data"]["ImagingStudy"]
    assert read["_status"] == {
        "id": "st-1",
        "extension": [{"url": NOTE, "valueString": EXT[0]["valueString"]}],
    }
    assert read["_started"] == {"extension": [{"valueString": EXT[0]["valueString"]}]}
    assert (read["description"], read["_description"]) == (None, {"id": "no-value"})
    assert read["meta"]["profile"] == [None, PROFILE]
    assert read["meta"]["_profile"] == [{"id": "p0", "extension": None}, None]
    assert read["identifier"][0]["_value"] == {"id": "uid-value"}
    assert read["subject"]["_reference"] == {"extension": [{"url": NOTE}]}
    series = read["series"][0]
    assert series["_uid"] == {"extension": [{"valueString": EXT[0]["valueString"]}]}
    assert series["modality"]["coding"][0]["_code"] == {"id": "code-1"}
    assert series["instance"][0]["_number"] == {"id": "n-1"}


async def test_a_bad_sibling_is_refused_with_its_element(gql: Gql) -> None:
    source = decorated("ImagingStudy-example-xr.json")
    source["meta"] = {"profile": [PROFILE], "_profile": [None, {"id": "one-too-many"}]}
    body = await gql(CREATE, r=source)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert expressions(body) == ["ImagingStudy.meta._profile"]


async def test_compiled_reads_equal_graphql_core(store: Repository) -> None:
    """The compiled execution plans read `_name` fields as graphql-core does, projection
    included (only the selected elements are read from the store)."""
    for name in demo.EXAMPLES:
        await store.create(decorated(name))
    answers = []
    for compiled in (True, False):
        schema = build_schema(Settings(seed=False), compiled=compiled)
        context = Context(_repo=store, settings=Settings(seed=False))  # type: ignore[arg-type]
        result = await schema.execute(READ, {"id": "example-xr"}, context_value=context)
        assert result.errors is None
        answers.append(result.data)
    assert answers[0] == answers[1]
    assert answers[0] is not None
    assert answers[0]["ImagingStudy"]["series"][0]["instance"][0]["_title"] is not None


# -- import and export ----------------------------------------------------------------------


async def test_import_and_export_keep_them_exactly(store: Repository) -> None:
    sources = [decorated(name) for name in demo.EXAMPLES]
    with_value_sibling = copy.deepcopy(sources[0])
    with_value_sibling["id"] = "value-sibling"
    with_value_sibling["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.5"}]
    with_value_sibling["extension"] = [{"url": NOTE, "valueCode": "a", "_valueCode": {"id": "c"}}]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": r} for r in [*sources, with_value_sibling]],
    }
    results = await Importer(store).run(bundle)
    assert [r.status for r in results] == ["created"] * 3
    out = io.StringIO()
    await files.write_ndjson((files.canonical(s) async for s in store.stream([])), out)
    exported = {s["id"]: s for s in map(json.loads, out.getvalue().splitlines())}
    for source in [*sources, with_value_sibling]:
        assert stored_form(source, exported[source["id"]]) == source
    for source in sources:  # fhir.resources has no `_valueX` on Extension: those two only
        ImagingStudy.model_validate(exported[source["id"]])
    again = await Importer(store).run(bundle)
    assert [r.status for r in again] == ["unchanged"] * 3


async def test_started_extensions_do_not_touch_the_started_search(store: Repository) -> None:
    """`_started` is not the started date: a study with only `_started` has no date to search
    or sort by, and one with both keeps the date's search keys."""
    dated = decorated("ImagingStudy-example-xr.json")
    undated = decorated("ImagingStudy-example.json")
    undated.pop("started")
    await store.create(dated)
    await store.create(undated)
    year = dated["started"][:4]
    found = await store.search([("started", year)], 10)
    assert [s["id"] for s in found] == [dated["id"]]
    newest_first = await store.search([], 10, sort="-started")
    assert [s["id"] for s in newest_first] == [dated["id"], undated["id"]]


def test_no_study_key_can_replace_the_private_document_keys() -> None:
    """`_id` and `_srv` are the document key and the search keys. The rules refuse them as
    FHIR elements (above); the stored document puts its own last all the same, so a study that
    carried them could never overwrite the study id or its search keys."""
    study = {**demo.study("doc", 1, 1), "_id": {"id": "x"}, "_srv": {"uid": "stolen"}}
    study["meta"] = {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"}
    doc = Repository._document(study, "doc", 2)
    assert doc["_id"] == "doc"
    assert doc["_srv"]["uid"] != "stolen"
    assert doc["_srv"]["deleted"] is False
