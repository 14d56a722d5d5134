"""FHIR GraphQL conformance: the cases of the fhir-test-cases repository's `r5/graphql` folder
(each `<case>.gql` with its expected `<case>.json`, or `$error`, in manifest.xml), translated to
ImagingStudy, the one resource type this server holds. Each test names the case it translates
and how; README "FHIR GraphQL conformance" has the rule-by-rule table these tests back.

Two translations recur. The Patient example (Patient/example: one `identifier`, `active`, three
`name`s) is `patient_like()`: `identifier` stays `identifier`, `active: true` becomes
`status: "available"`, the three names become three `series` (`given`, a list: the series'
`endpoint` references; `family`, on two of three: `description`; `use`: `modality.coding.code`).
A resource the case resolves through a reference (Observation.subject -> Patient/example) is a
stored ImagingStudy the study points at from an extension's `valueReference`, since an
ImagingStudy reference is what resolves here (README "FHIR `$graphql` endpoints and
references").

Differences of form that are GraphQL's, not this server's: the cases write some values as bare
names (`id: example`, `type: Patient`), which GraphQL reads as enum literals that an ID or
String argument refuses, so they are quoted here (the bare form is tested as refused); and
where HAPI's reference engine leaves an empty list or a null out of its answer, GraphQL gives
`[]` or `null`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType, get_named_type

from api.graphql.schema import schema
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.conformance import run
from tests.support.graphql import CREATE, Gql, error

TRIALS = "http://example.org/StructureDefinition/trials"


def eps(*names: str) -> list[str]:
    return [f"Endpoint/{n}" for n in names]


@pytest.fixture
async def examples(store: Repository) -> Repository:
    """The two official R5 ImagingStudy examples, both `available`: the search cases' data
    (their Patient search matches `example` and `xds`)."""
    for name in demo.EXAMPLES:
        await store.create(demo.example(name))
    return store


# -- searching (system level) ----------------------------------------------------------------


async def test_search_single(examples: Repository, gql: Gql) -> None:
    """search-single: `Patient(id: example) { id, active }` -> `ImagingStudy(id: "example")
    { id status }`; the case's bare `example` is an enum literal, which ID refuses."""
    body = await gql('{ ImagingStudy(id: "example") { id status } }')
    assert body == {"data": {"ImagingStudy": {"id": "example", "status": "available"}}}
    assert body == await gql('{ ImagingStudy(_id: "example") { id status } }')
    bare = await gql("{ ImagingStudy(id: example) { id status } }")
    assert error(bare)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "ID cannot represent" in error(bare)["message"]


async def test_search_simple(examples: Repository, gql: Gql) -> None:
    """search-simple: `PatientList(active: true) { id, active }` -> `ImagingStudyList(status:
    "available") { id status }`: every match, as a list."""
    body = await gql('{ ImagingStudyList(status: "available", _sort: "_id") { id status } }')
    assert body == {
        "data": {
            "ImagingStudyList": [
                {"id": "example", "status": "available"},
                {"id": "example-xr", "status": "available"},
            ]
        }
    }


async def test_search_full(examples: Repository, gql: Gql) -> None:
    """search-full: `PatientConnection(active: true) { count offset pagesize edges { mode,
    score, resource { id, active } } first previous next last }` -> the same on
    ImagingStudyConnection(status: "available"). As in the case, `mode` is `match`; `score`
    is null (no relevance ranking); `next` and `previous` are null on the only page."""
    body = await gql(
        '{ ImagingStudyConnection(status: "available", _sort: "_id") { count '
        "offset pagesize edges { mode score resource { id status } } "
        "first previous next last } }"
    )
    found = body["data"]["ImagingStudyConnection"]
    assert (found["count"], found["offset"], found["pagesize"]) == (2, 0, 20)
    assert found["edges"] == [
        {"mode": "match", "score": None, "resource": {"id": i, "status": "available"}}
        for i in ("example", "example-xr")
    ]
    assert (found["previous"], found["next"]) == (None, None)
    again = await gql(
        "query($c: String) { ImagingStudyConnection(_cursor: $c) { edges { resource { id } } } }",
        c=found["first"],
    )
    assert len(again["data"]["ImagingStudyConnection"]["edges"]) == 2


# -- field selection and list navigation -------------------------------------------------------


def test_primitive_fields_take_no_arguments() -> None:
    """The page's List Navigation: "Primitive fields SHALL NOT have any arguments at all"
    (no case file): no field of a FHIR primitive's scalar takes one, below the root types.
    (`contained`, resources as JSON, is no primitive: it pages as a list.)"""
    primitive = {"String", "Int", "Float", "Boolean", "ID"}
    with_arguments = [
        f"{type_.name}.{name}"
        for type_ in schema._schema.type_map.values()
        if isinstance(type_, GraphQLObjectType)
        and not type_.name.startswith("__")
        and type_.name not in ("Query", "Mutation", "Subscription")
        for name, field in type_.fields.items()
        if get_named_type(field.type).name in primitive and field.args
    ]
    assert with_arguments == []


async def test_list_sub(store: Repository, gql: Gql) -> None:
    """list-sub: on List/example-long, `entry(_count: 5, _offset: 5) { deleted item {
    reference } }` gives entries 6 to 10 -> a study with 12 `endpoint` references (a list of
    References, as List.entry.item is): `endpoint(_count: 5, _offset: 5) { reference }`."""
    study = demo.study("long", 1, 1)
    study["endpoint"] = [{"reference": f"Endpoint/{n}"} for n in range(1, 13)]
    await store.create(study)
    body = await gql(
        '{ ImagingStudy(id: "long") { endpoint(_count: 5, _offset: 5) { reference } } }'
    )
    assert body == {
        "data": {
            "ImagingStudy": {"endpoint": [{"reference": f"Endpoint/{n}"} for n in range(6, 11)]}
        }
    }


async def test_wrong_field(gql: Gql) -> None:
    """wrong-field ($error): `identifier { system value something }` on Patient -> the same on
    the study: an unknown field is an error naming it, and nothing is returned."""
    body = await run(
        gql,
        "identifier { system value something } status "
        "series { endpoint { reference } description }",
    )
    assert body["data"] is None
    found = error(body)
    assert found["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Cannot query field 'something' on type 'Identifier'" in found["message"]


async def test_filter_fhirpath(gql: Gql) -> None:
    """filter-fhirpath: `name(fhirpath: "family.exists()") { text given family }` keeps the
    two names with a family -> `series(fhirpath: "description.exists()")` keeps series 1 and
    3, the two with a description."""
    body = await run(
        gql,
        "identifier { system value } status "
        'series(fhirpath: "description.exists()") { endpoint { reference } '
        "description }",
    )
    assert body == {
        "data": {
            "ImagingStudy": {
                "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
                "status": "available",
                "series": [
                    {
                        "endpoint": [{"reference": r} for r in eps("Peter", "James")],
                        "description": "Chalmers",
                    },
                    {
                        "endpoint": [{"reference": r} for r in eps("Peter", "James")],
                        "description": "Windsor",
                    },
                ],
            }
        }
    }


async def test_polymorphic(store: Repository, gql: Gql) -> None:
    """polymorphic: Observation's `valueQuantity { value unit }`, a choice element by its JSON
    name -> an extension's `valuePeriod { start }` (ImagingStudy's choice elements are
    `value[x]` of extensions). The extension's Quantity, which has no typed field here, reads
    through `value` (JSON); `valueQuantity` is an unknown field."""
    study = demo.study("poly", 1, 1)
    study["extension"] = [
        {"url": "http://example.org/period", "valuePeriod": {"start": "2024-01-01"}},
        {"url": "http://example.org/weight", "valueQuantity": {"value": 185, "unit": "lbs"}},
    ]
    await store.create(study)
    body = await gql(
        '{ ImagingStudy(id: "poly") { extension { url valuePeriod { start } value } } }'
    )
    assert body["data"]["ImagingStudy"]["extension"] == [
        {
            "url": "http://example.org/period",
            "valuePeriod": {"start": "2024-01-01"},
            "value": {"start": "2024-01-01"},
        },
        {
            "url": "http://example.org/weight",
            "valuePeriod": None,
            "value": {"value": 185, "unit": "lbs"},
        },
    ]
    body = await gql('{ ImagingStudy(id: "poly") { extension { valueQuantity { value } } } }')
    assert "Cannot query field 'valueQuantity'" in error(body)["message"]


# -- extensions --------------------------------------------------------------------------------


@pytest.fixture
async def glossy(store: Repository) -> Repository:
    """Patient/glossy of the cases (one extension `trials` with `valueCode: renal`) as a study,
    whose `started` carries a primitive extension as the apgar Observation's subject's
    `birthDate` does in extension-simple."""
    study = demo.study("glossy", 1, 1)
    study["extension"] = [{"url": TRIALS, "valueCode": "renal"}]
    study["started"] = "2016-05-18"
    study["_started"] = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "2016-05-18T10:28:45Z",
            }
        ]
    }
    await store.create(study)
    return store


async def test_extension_simple(glossy: Repository, gql: Gql) -> None:
    """extension-simple: `birthDate _birthDate { extension { valueDateTime } }` (read through
    `subject { resource }`) -> `started _started { extension { valueDateTime } }` on the
    study: a primitive's extensions by the `_name` field."""
    body = await gql(
        '{ ImagingStudy(id: "glossy") { started _started { extension { valueDateTime } } } }'
    )
    assert body == {
        "data": {
            "ImagingStudy": {
                "started": "2016-05-18",
                "_started": {"extension": [{"valueDateTime": "2016-05-18T10:28:45Z"}]},
            }
        }
    }


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (None, True),  # extension-complex
        (TRIALS, True),  # extension-complex-in
        (TRIALS + "X", False),  # extension-complex-out
    ],
)
async def test_extension_complex_in_and_out(
    glossy: Repository, gql: Gql, url: str | None, kept: bool
) -> None:
    """extension-complex, -in, -out: `id extension(url: ...) { url, valueCode }` on
    Patient/glossy -> the same on the study: no filter or the extension's own url keeps it,
    another url keeps nothing (an empty list, where the case leaves `extension` out)."""
    argument = "" if url is None else f'(url: "{url}")'
    body = await gql(
        f'{{ ImagingStudy(id: "glossy") {{ id extension{argument} {{ url valueCode }} }} }}'
    )
    expected = [{"url": TRIALS, "valueCode": "renal"}] if kept else []
    assert body == {"data": {"ImagingStudy": {"id": "glossy", "extension": expected}}}


# -- references --------------------------------------------------------------------------------

PRIOR = "http://example.org/fhir/StructureDefinition/prior-study"


@pytest.fixture
async def referring(store: Repository) -> Repository:
    """Observation/example of the cases (its `subject` -> Patient/example, `active: true`) as
    study `obs`, whose extension points at study `target` (`status: available`), and
    MedicationDispense/meddisp008 (an `authorizingPrescription` that does not resolve) as the
    study's `basedOn`, `ServiceRequest/medrx0330`, which no store here holds."""
    await store.create(demo.study("target", 1, 1))
    study = demo.study("obs", 1, 1)
    study["extension"] = [{"url": PRIOR, "valueReference": {"reference": "ImagingStudy/target"}}]
    study["basedOn"] = [{"reference": "ServiceRequest/medrx0330"}]
    await store.create(study)
    return store


def follow(resource: str) -> str:
    return (
        f'{{ ImagingStudy(id: "obs") {{ id extension {{ valueReference {{ reference '
        f"{resource} }} }} }} }}"
    )


def followed(resource: Any) -> dict[str, Any]:
    return {
        "data": {
            "ImagingStudy": {
                "id": "obs",
                "extension": [{"valueReference": {"reference": "ImagingStudy/target", **resource}}],
            }
        }
    }


async def test_reference(referring: Repository, gql: Gql) -> None:
    """reference: `subject { reference, resource { active } }` -> `valueReference { reference
    resource { ... on ImagingStudy { status } } }`. `resource` is the union Resource here, so
    a field is selected through a fragment; the case's bare `resource { active }` is refused
    by GraphQL validation."""
    body = await gql(follow("resource { ... on ImagingStudy { status } }"))
    assert body == followed({"resource": {"status": "available"}})
    bare = await gql(follow("resource { status }"))
    assert error(bare)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "inline fragment on 'ImagingStudy'" in error(bare)["message"]


async def test_reference_fragment_type(referring: Repository, gql: Gql) -> None:
    """reference-fragment-type: `resource { ...on Patient { active } }` -> `resource {
    ... on ImagingStudy { status } }`, and a fragment on the other member selects nothing."""
    body = await gql(
        follow("resource { ... on ImagingStudy { status } ... on OtherResource { resourceType } }")
    )
    assert body == followed({"resource": {"status": "available"}})


async def test_reference_type_in_and_out(referring: Repository, gql: Gql) -> None:
    """reference-type-in and -out: `resource(type: Patient)` resolves, `resource(type: Group)`
    gives no resource -> `resource(type: "ImagingStudy")` and `resource(type: "Group")` (null,
    where the case leaves `resource` out). `type` is a String: the bare name is refused."""
    body = await gql(follow('resource(type: "ImagingStudy") { ... on ImagingStudy { status } }'))
    assert body == followed({"resource": {"status": "available"}})
    body = await gql(follow('resource(type: "Group") { ... on ImagingStudy { status } }'))
    assert body == followed({"resource": None})
    bare = await gql(follow("resource(type: ImagingStudy) { __typename }"))
    assert "String cannot represent a non string value" in error(bare)["message"]


async def test_reference_broken_and_optional(referring: Repository, gql: Gql) -> None:
    """reference-broken ($error) and reference-optional: MedicationDispense's
    `authorizingPrescription { reference resource { id } }`, which the server cannot resolve,
    is an error, and with `resource(optional: true)` answers the reference alone ->
    `basedOn` = ServiceRequest/medrx0330: NOT_FOUND at the path, or null when optional."""
    query = (
        '{ ImagingStudy(id: "obs") { basedOn { reference resource%s { '
        "... on OtherResource { id } } } } }"
    )
    broken = await gql(query % "")
    found = error(broken)
    assert found["extensions"]["code"] == "NOT_FOUND"
    assert found["path"] == ["ImagingStudy", "basedOn", 0, "resource"]
    optional = await gql(query % "(optional: true)")
    assert optional == {
        "data": {
            "ImagingStudy": {
                "basedOn": [{"reference": "ServiceRequest/medrx0330", "resource": None}]
            }
        }
    }


async def test_reference_reverse_is_refused(
    referring: Repository, gql: Gql, http: httpx.AsyncClient
) -> None:
    """reference-reverse: on Patient/example, `ConditionList(_reference: patient) { id }` lists
    the Conditions that point at it. Not supported: no R5 ImagingStudy search parameter
    targets an ImagingStudy, so there is no `_reference` to name; a search field inside a
    resource is an unknown field, at the system and the instance endpoint alike."""
    body = await gql(
        '{ ImagingStudy(id: "target") { id ImagingStudyList(_reference: extension) { id } } }'
    )
    assert body["data"] is None
    assert "Cannot query field 'ImagingStudyList' on type 'ImagingStudy'" in error(body)["message"]
    answer = (
        await http.post(
            "/ImagingStudy/target/$graphql",
            json={"query": "{ id ImagingStudyList(_reference: patient) { id } }"},
        )
    ).json()
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "ImagingStudyList" in answer["errors"][0]["message"]


# -- directives: @include/@skip and the data flattening directives ---------------------------


@pytest.mark.parametrize(
    ("directive", "variables", "present"),
    [
        ("@include(if: true)", {}, True),
        ("@skip(if: true)", {}, False),
        ("@include(if: $var)", {"var": True}, True),
    ],
)
async def test_directive_include_skip_variable(
    gql: Gql, directive: str, variables: dict[str, Any], present: bool
) -> None:
    """directive-include, directive-skip, directive-variable: `identifier @include(if: true)`,
    `@skip(if: true)`, `@include(if: $var)` with `$var` true, on Patient/example -> the same
    on the study. The case declares `$var : Boolean`, which GraphQL refuses for `if:`
    (Boolean!): declared `Boolean!` here."""
    body = await run(gql, f"identifier {directive} {{ system value }} status", **variables)
    assert body.get("data"), body
    assert ("identifier" in body["data"]["ImagingStudy"]) is present


async def test_flatten(gql: Gql) -> None:
    """flatten: `identifier @flatten { system value } active name @flatten { text given
    family }` -> `series @flatten { number endpoint @flatten { reference } description }`
    (`given`, a list of strings, is the flattened endpoint references)."""
    body = await run(
        gql,
        """identifier @flatten { system value } status
      series @flatten { number endpoint @flatten { reference } description }""",
    )
    assert body == {
        "data": {
            "ImagingStudy": {
                "system": ["urn:oid:1.2.36.146.595.217.0.1"],
                "value": ["12345"],
                "status": "available",
                "number": [1, 2, 3],
                "reference": eps("Peter", "James", "Jim", "Peter", "James"),
                "description": ["Chalmers", "Windsor"],
            }
        }
    }


async def test_flatten_first(gql: Gql) -> None:
    """flatten-first: `name @flatten { text given @first family }` -> `series @flatten {
    endpoint @first @flatten { reference } description }`: the first given of each name."""
    body = await run(
        gql,
        """identifier @flatten { system value } status
      series @flatten { endpoint @first @flatten { reference } description }""",
    )
    data = body["data"]["ImagingStudy"]
    assert data["reference"] == eps("Peter", "Jim", "Peter")
    assert data["description"] == ["Chalmers", "Windsor"]


async def test_flatten_singleton1(gql: Gql) -> None:
    """flatten-singleton1: `identifier @flatten { system @singleton value @singleton }` -> the
    same: one identifier, so one value each, not lists."""
    body = await run(
        gql,
        """identifier @flatten { system @singleton value @singleton } status
      series @flatten { endpoint @flatten { reference } description }""",
    )
    data = body["data"]["ImagingStudy"]
    assert data["system"] == "urn:oid:1.2.36.146.595.217.0.1"
    assert data["value"] == "12345"
    assert data["description"] == ["Chalmers", "Windsor"]


async def test_flatten_singleton2_is_an_error(gql: Gql) -> None:
    """flatten-singleton2 ($error): `name @flatten { ... family @singleton }` over two
    families -> `description @singleton` over two series' descriptions: an error naming it."""
    body = await run(
        gql,
        """identifier @flatten { system @singleton value @singleton }
      series @flatten { endpoint @flatten { reference } description @singleton }""",
    )
    assert body["data"] is None
    found = error(body)
    assert found["extensions"]["code"] == "BAD_USER_INPUT"
    assert "@singleton" in found["message"]
    assert "description" in found["message"]


async def test_flatten_singleton3(gql: Gql) -> None:
    """flatten-singleton3: `name @flatten @first { text given family @singleton }` -> `series
    @flatten @first { endpoint @flatten { reference } description @singleton }`."""
    body = await run(
        gql,
        """identifier @flatten { system @singleton value @singleton } status
      series @flatten @first { endpoint @flatten { reference } description @singleton }""",
    )
    assert body == {
        "data": {
            "ImagingStudy": {
                "system": "urn:oid:1.2.36.146.595.217.0.1",
                "value": "12345",
                "status": "available",
                "reference": eps("Peter", "James"),
                "description": "Chalmers",
            }
        }
    }


async def test_flatten_slice1_by_a_path(gql: Gql) -> None:
    """flatten-slice1: `name @flatten @slice(path: "use") { given family @singleton }` ->
    `series @flatten @slice(path: "modality.coding.code") { ... }`: names suffixed by use."""
    body = await run(
        gql,
        """identifier @flatten { system value } status
      series @flatten @slice(path: "modality.coding.code") {
        endpoint @flatten { reference } description @singleton } """,
    )
    assert body == {
        "data": {
            "ImagingStudy": {
                "system": ["urn:oid:1.2.36.146.595.217.0.1"],
                "value": ["12345"],
                "status": "available",
                "reference.official": eps("Peter", "James"),
                "description.official": "Chalmers",
                "reference.usual": eps("Jim"),
                "reference.maiden": eps("Peter", "James"),
                "description.maiden": "Windsor",
            }
        }
    }


async def test_flatten_slice2_by_index(gql: Gql) -> None:
    """flatten-slice2: `name @flatten @slice(path: "$index") { given family @singleton }` ->
    the same on `series`: names suffixed by position."""
    body = await run(
        gql,
        """identifier @flatten { system value } status
      series @flatten @slice(path: "$index") {
        endpoint @flatten { reference } description @singleton } """,
    )
    data = body["data"]["ImagingStudy"]
    assert {k: v for k, v in data.items() if "." in k} == {
        "reference.0": eps("Peter", "James"),
        "description.0": "Chalmers",
        "reference.1": eps("Jim"),
        "reference.2": eps("Peter", "James"),
        "description.2": "Windsor",
    }


# -- mutations (the page's "Mutations"; no fhir-test-cases case) -------------------------------


async def test_mutations_by_the_pages_names(gql: Gql) -> None:
    """`[Type]Create(res)`, `[Type]Update(id, res)`, `[Type]Delete(id)` as the page names them.
    Two documented differences: a Create that carries an `id` keeps it (the page: "overwritten
    by the server"; here a client may choose the id, e.g. to re-import), and Delete returns
    `{ id deleted }` (the page: no return), since a GraphQL field needs a type."""
    study = demo.study("chosen", 1, 1)
    created = await gql(CREATE, res=study)
    assert created["data"]["ImagingStudyCreate"]["id"] == "chosen"
    study["description"] = "changed"
    updated = await gql(
        'mutation($r: ImagingStudyInput!) { ImagingStudyUpdate(id: "chosen", '
        "res: $r) { description meta { versionId } } }",
        r=study,
    )
    assert updated["data"]["ImagingStudyUpdate"] == {
        "description": "changed",
        "meta": {"versionId": "2"},
    }
    deleted = await gql('mutation { ImagingStudyDelete(id: "chosen") { id deleted } }')
    assert deleted == {"data": {"ImagingStudyDelete": {"id": "chosen", "deleted": True}}}
    assert await gql('{ ImagingStudy(id: "chosen") { id } }') == {"data": {"ImagingStudy": None}}
