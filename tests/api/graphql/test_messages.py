"""Messages a person can act on (issue 11, section 6): each names the element once, says the
rule, and where there is an obvious fix, says it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from api.transfer.stream import run_import
from api.transfer.targets import LocalTarget
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error

LIST = "query($s: [String!]) { ImagingStudyList(started: $s) { id } }"
IMPORT = """mutation($r: JSON!, $dry: Boolean) {
  ImagingStudyImport(resource: $r, dryRun: $dry) { index status outcome } }"""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["2020-13-01"],
            "started: '2020-13-01' is not a calendar date or time: month must be in 1..12",
        ),
        ([""], "started: a search value must not be empty"),
        (["ge2020", ""], "started: a search value must not be empty"),
        (["ge2020,"], "started: '2020,' is not a FHIR date or dateTime"),  # a comma is a char
    ],
)
async def test_a_search_error_names_its_argument_once(
    gql: Gql, values: list[str], message: str
) -> None:
    body = await gql(LIST, s=values)
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["message"].startswith(message)
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == ["started"]


async def test_a_reference_of_the_wrong_type_is_named_once(gql: Gql) -> None:
    body = await gql('{ ImagingStudyList(patient: "Device/d1") { id } }')
    assert error(body)["message"] == "patient: searches Patient references, not Device"


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        (">=2020", "ge2020"),
        ("<2021-06", "lt2021-06"),
        ("> 2020-01-01", "gt2020-01-01"),
        ("!=2020", "ne2020"),
    ],
)
async def test_a_comparison_sign_gets_the_prefix_to_use(gql: Gql, value: str, advice: str) -> None:
    body = await gql(LIST, s=[value])
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["message"] == (
        f"started: '{value}' is not a FHIR date search; use a prefix: {advice}"
    )


async def test_the_advised_prefix_works(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("d2021", 1, 1, started="2021-03-04"))
    assert (await gql(LIST, s=["ge2020"]))["data"]["ImagingStudyList"] == [{"id": "d2021"}]


async def test_an_if_none_exist_error_names_the_parameter(gql: Gql) -> None:
    body = await gql(CREATE, res=demo.study("ine", 1, 1), ine="started=>=2020")
    assert error(body)["message"] == (
        "ifNoneExist: started: '>=2020' is not a FHIR date search; use a prefix: ge2020"
    )


async def test_paging_errors_name_the_argument_once(gql: Gql) -> None:
    body = await gql("{ ImagingStudyList(_count: 0) { id } }")
    assert error(body)["message"] == "_count: must be between 1 and 1000 (got 0)"


async def test_a_cost_refusal_says_how_to_fit(gql: Gql, untouched: list[str]) -> None:
    body = await gql("{ ImagingStudyList(_count: 50) { series(_count: 1) { instance { uid } } } }")
    message = error(body)["message"]
    assert message.startswith("query rejected: cost ")
    assert message.endswith(
        "; to fit, page the instances: instance(_count: 100, _offset: 0), "
        "then the next _offset; lower the _count of ImagingStudyList"
    )
    diagnostics = error(body)["extensions"]["resource"]["issue"][0]["diagnostics"]
    assert diagnostics == message
    body = await gql('{ ImagingStudyHistory(id: "x") { fhirJson } }')
    assert error(body)["message"].endswith(
        "; to fit, ask fhirJson of fewer studies at once; lower the _count of ImagingStudyHistory"
    )
    assert untouched == []
    # Following the advice fits.
    body = await gql(
        "{ ImagingStudyList(_count: 50) { series(_count: 1) { "
        "instance(_count: 100, _offset: 0) { uid } } } }"
    )
    assert "errors" not in body


async def test_more_issues_are_counted_in_good_english(gql: Gql) -> None:
    one = {**demo.study("two", 1, 1), "status": "bogus", "language": "not a tag!"}
    message = error(await gql(CREATE, res=one))["message"]
    assert message.endswith(" (and 1 more issue, listed in the OperationOutcome)")
    three = {**one, "started": "yesterday", "description": ""}
    body = await gql(CREATE, res=three)
    assert error(body)["message"].endswith(" (and 3 more issues, listed in the OperationOutcome)")
    assert len(error(body)["extensions"]["resource"]["issue"]) == 4


async def test_import_issues_name_the_entry(gql: Gql) -> None:
    bad = {**demo.study("bad", 1, 1), "status": "bogus"}
    payload = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": demo.study("ok1", 1, 1)},
            {"resource": demo.study("ok2", 1, 1)},
            {"resource": bad},
        ],
    }
    results = (await gql(IMPORT, r=payload))["data"]["ImagingStudyImport"]
    assert [r["status"] for r in results] == ["created", "created", "rejected"]
    assert results[2]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[2].resource.status"]
    # A resource imported alone is the resource itself.
    result = (await gql(IMPORT, r=bad))["data"]["ImagingStudyImport"][0]
    assert result["outcome"]["issue"][0]["expression"] == ["ImagingStudy.status"]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    lines = [json.dumps(demo.study(f"n{n}", 1, 1)) for n in range(5)]
    lines[2] = json.dumps({**demo.study("bad", 1, 1), "status": "bogus"})
    lines[3] = '{"resourceType": "ImagingStudy", oops}'
    (tmp_path / "studies.ndjson").write_text("\n".join(lines) + "\n")
    (tmp_path / "bundle.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": demo.study("b0", 1, 1)},
                    {"resource": {**demo.study("b1", 1, 1), "status": "bogus"}},
                ],
            }
        )
    )
    return tmp_path


async def test_the_import_report_names_lines_and_entries(files: Path, store: Repository) -> None:
    report = await run_import(LocalTarget(store), [str(files)], out=io.StringIO())
    problems = {Path(source).name: why for source, why in report.problems}
    assert problems["bundle.json"].startswith("Bundle.entry[1].resource.status: ")
    # An NDJSON line is named by its line number, its issue by the resource's own path.
    assert problems["studies.ndjson:3"].startswith("ImagingStudy.status: ")
    assert problems["studies.ndjson:4"] == (
        "not JSON: Expecting property name enclosed in double quotes at column 34"
    )
    assert "dry run" not in report.table()


async def test_a_dry_run_summary_says_nothing_was_written(files: Path, store: Repository) -> None:
    report = await run_import(LocalTarget(store), [str(files)], dry_run=True, out=io.StringIO())
    assert report.counts["created"] == 4
    assert report.table().splitlines()[-1] == (
        "dry run: nothing was written; the counts say what an import would have done"
    )
    assert await store.count([]) == 0
