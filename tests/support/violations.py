"""R5 rule violations on the example-xr study, each with the element it must name and the rule
it must state: the store's rules (tests/store/fhir/test_rules.py) and the GraphQL writes
(tests/api/graphql/test_writes.py) are checked against the same table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store.fhir import Study
from store.interop.demo import example


def xr() -> Study:
    """A fresh copy of the R5 example ImagingStudy-example-xr."""
    return example("ImagingStudy-example-xr.json")


def _drop(*path: Any) -> Callable[[Study], None]:
    def edit(study: Study) -> None:
        target = study
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return edit


REQUIRED = [
    (_drop("status"), "ImagingStudy.status"),
    (_drop("subject"), "ImagingStudy.subject"),
    (_drop("series", 0, "uid"), "ImagingStudy.series[0].uid"),
    (_drop("series", 0, "modality"), "ImagingStudy.series[0].modality"),
    (_drop("series", 0, "performer", 0, "actor"), "ImagingStudy.series[0].performer[0].actor"),
    (_drop("series", 0, "instance", 1, "uid"), "ImagingStudy.series[0].instance[1].uid"),
    (_drop("series", 0, "instance", 0, "sopClass"), "ImagingStudy.series[0].instance[0].sopClass"),
]


BAD_UIDS = [
    ("1.2.03.4", "leading zero"),
    ("1." + "2" * 63, "at most 64"),
    ("1.2.abc", "digits"),
    ("1..2", "digits"),
    ("", "must not be empty"),
]


WRONG_TARGETS = [
    (("subject",), "Practitioner/1", "ImagingStudy.subject.reference"),
    (("encounter",), "Patient/1", "ImagingStudy.encounter.reference"),
    (("referrer",), "Organization/1", "ImagingStudy.referrer.reference"),
    (("endpoint", 0), "Device/1", "ImagingStudy.endpoint[0].reference"),
    (("basedOn", 1), "Patient/1", "ImagingStudy.basedOn[1].reference"),
    (
        ("series", 0, "performer", 0, "actor"),
        "Location/1",
        "ImagingStudy.series[0].performer[0].actor.reference",
    ),
    (("series", 0, "endpoint", 0), "Patient/1", "ImagingStudy.series[0].endpoint[0].reference"),
    (("identifier", 1, "assigner"), "Patient/1", "ImagingStudy.identifier[1].assigner.reference"),
    (("partOf", 0), "Patient/1", "ImagingStudy.partOf[0].reference"),
    (("location",), "Patient/1", "ImagingStudy.location.reference"),
    (("procedure", 0, "reference"), "Patient/1", "ImagingStudy.procedure[0].reference.reference"),
    (("reason", 0, "reference"), "Patient/1", "ImagingStudy.reason[0].reference.reference"),
    (("note", 0, "authorReference"), "Device/1", "ImagingStudy.note[0].authorReference.reference"),
    (("series", 0, "specimen", 0), "Patient/1", "ImagingStudy.series[0].specimen[0].reference"),
    (
        ("series", 0, "bodySite", "reference"),
        "Patient/1",
        "ImagingStudy.series[0].bodySite.reference.reference",
    ),
]


def with_reference(path: tuple[Any, ...], reference: str) -> Study:
    """The example-xr study with the Reference at `path` replaced (or added) as a bare
    `reference`."""
    study = xr()
    target: Any = study
    for step, following in zip(path, (*path[1:], None), strict=True):
        if isinstance(step, int) and step == len(target):
            target.append({})
        elif isinstance(step, str) and step not in target:
            target[step] = [] if isinstance(following, int) else {}
        target = target[step]
    target.clear()
    target["reference"] = reference
    return study
