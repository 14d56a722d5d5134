"""The pure rule of the endpoints ingest adds: only ever appended, one per target, the very
same study back when nothing is lacking, and every rule of an update on the result."""

from __future__ import annotations

import copy

import pytest

from store.fhir.edit import create
from store.fhir.endpoints import add_endpoints, lacking, with_endpoints
from store.fhir.outcome import StoreError
from store.interop import demo

WADO = {
    "type": "Endpoint",
    "identifier": {"system": "urn:ietf:rfc:3986", "value": "http://pacs/dicom-web"},
    "display": "DICOMweb WADO-RS http://pacs/dicom-web",
}
LITERAL = {"reference": "Endpoint/archive"}


def study() -> dict[str, object]:
    return create({**demo.study("e1", 2, 1), "endpoint": [LITERAL]}, 100)


def test_a_reference_is_appended_after_those_there_and_the_input_is_unchanged() -> None:
    old = study()
    kept = copy.deepcopy(old)
    uid = old["series"][1]["uid"]  # type: ignore[index]
    new = with_endpoints(old, [WADO], {uid: [WADO], "no-such-series": [WADO]})
    assert old == kept
    assert new["endpoint"] == [LITERAL, WADO]
    assert [s.get("endpoint") for s in new["series"]] == [None, [WADO]]


def test_the_same_target_labelled_otherwise_is_not_added_again() -> None:
    old = with_endpoints(study(), [WADO], {})
    relabelled = {**WADO, "display": "the PACS"}
    assert lacking(old, [relabelled, {"reference": "Endpoint/archive"}], {}) == ([], {})
    assert with_endpoints(old, [relabelled], {}) is old
    assert add_endpoints(old, [relabelled], {}, 100) is old  # nothing to write


def test_a_new_target_is_added_once_even_when_asked_twice() -> None:
    other = {**WADO, "identifier": {**WADO["identifier"], "value": "http://other/dicom-web"}}
    new = with_endpoints(study(), [other, other], {})
    assert new["endpoint"] == [LITERAL, other]


def test_the_result_is_checked_as_an_update_is() -> None:
    with pytest.raises(StoreError, match="entered-in-error"):
        add_endpoints({**study(), "status": "entered-in-error"}, [WADO], {}, 100)
    with pytest.raises(StoreError) as refused:
        add_endpoints(study(), [{"reference": "Patient/p1"}], {}, 100)
    assert any("endpoint" in (i.expression or "") for i in refused.value.issues)
