"""The pure R5 rules: each violation is one issue naming the element by FHIRPath."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from store.fhir import Study
from store.fhir.validate import validate
from store.interop.demo import EXAMPLES, example
from tests.support.violations import BAD_UIDS, REQUIRED, WRONG_TARGETS, with_reference, xr


def issues_of(study: Study, max_instances: int = 50_000) -> dict[str, str]:
    return {i.expression: i.diagnostics for i in validate(study, max_instances)}


@pytest.mark.parametrize("name", EXAMPLES)
def test_official_examples_are_valid(name: str) -> None:
    assert validate(example(name), 50_000) == []


@pytest.mark.parametrize(("edit", "expression"), REQUIRED)
def test_each_required_element_missing_is_named(
    edit: Callable[[Study], None], expression: str
) -> None:
    study = xr()
    edit(study)
    problems = issues_of(study)
    assert list(problems) == [expression]
    assert "required" in problems[expression]


@pytest.mark.parametrize(("uid", "rule"), BAD_UIDS)
def test_bad_series_and_instance_uids(uid: str, rule: str) -> None:
    study = xr()
    study["series"][0]["uid"] = uid
    study["series"][0]["instance"][0]["uid"] = uid
    problems = issues_of(study)
    for expression in ("ImagingStudy.series[0].uid", "ImagingStudy.series[0].instance[0].uid"):
        assert rule in problems[expression]


def test_study_uid_identifier_and_sop_class_must_be_dicom_oids() -> None:
    study = xr()
    study["identifier"][0]["value"] = "urn:oid:1.2.034"
    study["series"][0]["instance"][0]["sopClass"]["code"] = "urn:oid:1.2.x"
    problems = issues_of(study)
    assert "leading zero" in problems["ImagingStudy.identifier[0].value"]
    assert (
        "SOP class code is not valid"
        in problems["ImagingStudy.series[0].instance[0].sopClass.code"]
    )


@pytest.mark.parametrize(("path", "reference", "expression"), WRONG_TARGETS)
def test_each_reference_points_at_an_r5_target_type(
    path: tuple[Any, ...], reference: str, expression: str
) -> None:
    study = with_reference(path, reference)
    problems = issues_of(study)
    assert list(problems) == [expression]
    assert "allowed targets" in problems[expression]


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/1",
        "http://example.org/fhir/Patient/1",
        "urn:uuid:8c1c3a4e-3a6b-4c0e-9d7e-1c2b3a4d5e6f",
        "Patient/1/_history/2",
    ],
)
def test_accepted_reference_forms(reference: str) -> None:
    study = xr()
    study["subject"] = {"reference": reference}
    assert issues_of(study) == {}


def test_contained_and_identifier_only_references() -> None:
    study = xr()
    study["contained"] = [{"resourceType": "Patient", "id": "p1"}]
    study["subject"] = {"reference": "#p1"}
    assert issues_of(study) == {}
    study["subject"] = {"reference": "#nope"}
    assert "no contained resource" in issues_of(study)["ImagingStudy.subject.reference"]
    study["subject"] = {"identifier": {"system": "urn:mrn", "value": "09236"}}
    assert "must say its type" in issues_of(study)["ImagingStudy.subject.type"]
    study["subject"]["type"] = "Patient"
    assert issues_of(study) == {}
    study["subject"]["type"] = "Practitioner"
    assert "not an allowed target" in issues_of(study)["ImagingStudy.subject.type"]


VALUE_RULES = [
    ("status", "done", "ImagingStudy.status", "ImagingStudyStatus"),
    ("started", "2024-01-01T10:00:00", "ImagingStudy.started", "time zone"),
    ("started", "2024-02-30", "ImagingStudy.started", "calendar"),
    ("started", "yesterday", "ImagingStudy.started", "dateTime"),
    ("numberOfSeries", -1, "ImagingStudy.numberOfSeries", "0 or more"),
    ("numberOfInstances", "3", "ImagingStudy.numberOfInstances", "integer"),
    ("id", "bad id!", "ImagingStudy.id", "FHIR id"),
    ("language", "not a tag!", "ImagingStudy.language", "BCP 47"),
    ("description", "   ", "ImagingStudy.description", "empty"),
    ("foo", 1, "ImagingStudy.foo", "unknown element"),
    ("identifier", [], "ImagingStudy.identifier", "empty list"),
    ("subject", [{"reference": "Patient/1"}], "ImagingStudy.subject", "not a list"),
]


@pytest.mark.parametrize(("element", "value", "expression", "rule"), VALUE_RULES)
def test_value_rules(element: str, value: Any, expression: str, rule: str) -> None:
    study = xr()
    study[element] = value
    problems = issues_of(study)
    assert list(problems) == [expression]
    assert rule in problems[expression]


def test_partial_dates_and_offsets_are_valid() -> None:
    study = xr()
    for started in ("2024", "2024-03", "2024-03-05", "2024-03-05T10:00:00.123+14:00"):
        study["started"] = started
        assert issues_of(study) == {}, started


def test_unknown_nested_element_and_dicom_modality() -> None:
    study = xr()
    study["series"][0]["instance"][1]["frames"] = 3
    study["series"][0]["modality"]["coding"][0]["code"] = "XRAY"
    problems = issues_of(study)
    assert "unknown element" in problems["ImagingStudy.series[0].instance[1].frames"]
    assert "CID 33" in problems["ImagingStudy.series[0].modality.coding[0].code"]


def test_extension_rules() -> None:
    study = xr()
    study["extension"] = [
        {"url": "http://x/e", "valueString": "ok"},
        {"url": "http://x/e", "valueFoo": 1},
        {"url": "http://x/e", "valueString": "a", "valueBoolean": True},
        {"valueString": "no url"},
    ]
    problems = issues_of(study)
    assert "ImagingStudy.extension[0]" not in problems
    assert "not an R5 value[x]" in problems["ImagingStudy.extension[1].valueFoo"]
    assert "at most one value" in problems["ImagingStudy.extension[2]"]
    assert "required" in problems["ImagingStudy.extension[3].url"]


def test_all_violations_are_reported_together() -> None:
    study = xr()
    del study["status"]
    study["series"][0]["uid"] = "01.2"
    study["series"][0]["instance"][1]["uid"] = "x"
    assert len(issues_of(study)) == 3


def test_uids_are_unique_within_the_study() -> None:
    study = xr()
    study["series"].append(copy.deepcopy(study["series"][0]))
    problems = issues_of(study)
    assert "already used by ImagingStudy.series[0]" in problems["ImagingStudy.series[1].uid"]
    assert "ImagingStudy.series[1].instance[0].uid" in problems


def test_study_size_cap() -> None:
    problems = issues_of(xr(), max_instances=1)
    assert "at most 1 instances" in problems["ImagingStudy.series"]


def test_json_content_may_not_carry_operator_or_dotted_names() -> None:
    study = xr()
    study["contained"] = [
        {"resourceType": "Patient", "id": "p", "$where": "1", "name": [{"a.b": 1}]}
    ]
    study["extension"] = [{"url": "http://x", "valueQuantity": {"$gt": 1}}]
    problems = issues_of(study)
    assert "ImagingStudy.contained[0].$where" in problems
    assert "ImagingStudy.contained[0].name[0].a.b" in problems
    assert "ImagingStudy.extension[0].valueQuantity.$gt" in problems
