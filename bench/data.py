"""Realistic generated studies for the benchmarks, with deterministic UIDs: every series and
instance element a viewer reads is filled in."""

from __future__ import annotations

from typing import Any

from store.interop import demo

SCT = "http://snomed.info/sct"


def study(
    name: str,
    n_series: int,
    n_instances: int,
    *,
    patient: str = "p1",
    started: str = "2024-03-05T10:00:00+01:00",
    modality: str = "CT",
) -> dict[str, Any]:
    resource = demo.study(
        name, n_series, n_instances, patient=patient, started=started, modality=modality
    )
    resource["endpoint"] = [{"reference": "Endpoint/wado"}]
    for series in resource["series"]:
        series.update(
            {
                "started": started,
                "endpoint": [{"reference": "Endpoint/wado"}],
                "bodySite": {
                    "concept": {
                        "coding": [{"system": SCT, "code": "51185008", "display": "Thorax"}]
                    }
                },
                "laterality": {
                    "coding": [{"system": SCT, "code": "51440002", "display": "Bilateral"}]
                },
            }
        )
        for instance in series.get("instance", ()):
            instance["title"] = f"Image {instance['number']}"
    return resource


def worklist(count: int) -> list[dict[str, Any]]:
    """`count` small studies over a few patients, modalities and years."""
    modalities = ["CT", "MR", "US", "DX", "NM"]
    return [
        study(
            f"w{n:05d}",
            3,
            20,
            patient=f"p{n % 97}",
            started=f"{2019 + n % 6}-{1 + n % 12:02d}-{1 + n % 28:02d}T08:00:00Z",
            modality=modalities[n % 5],
        )
        for n in range(count)
    ]
