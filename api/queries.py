"""Read fields: one async store call at the root; everything below is dict access."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from api.context import Info
from api.paging import check_count, check_offset
from api.types.imaging_study import ImagingStudy


def _arg(description: str) -> Any:
    return strawberry.argument(description=description)


@strawberry.type
class Query:
    @strawberry.field(name="ImagingStudy", description="One study by id, or null when there is "
                      "none (or it was deleted).")
    async def imaging_study(self, info: Info, id: strawberry.ID) -> ImagingStudy | None:
        return await info.context.repo.get(id)

    @strawberry.field(name="ImagingStudyList", description="Studies matching FHIR search "
                      "arguments, newest first. Values use FHIR search syntax; a comma means OR.")
    async def imaging_study_list(
        self, info: Info,
        patient: Annotated[str | None, _arg("The patient: Patient/123 or 123.")] = None,
        subject: Annotated[str | None, _arg("The subject: Patient/123, Device/9, Group/4, "
                                            "or a bare id of any of them.")] = None,
        status: Annotated[str | None, _arg("The status code, e.g. available.")] = None,
        identifier: Annotated[str | None, _arg("An identifier token: system|value, value, "
                                               "|value or system|.")] = None,
        _count: Annotated[int | None, _arg("Page size: default 20, at most the configured "
                                           "cap (1,000 by default).")] = None,
        _offset: Annotated[int | None, _arg("How many matches to skip first.")] = None,
    ) -> list[ImagingStudy]:
        settings = info.context.settings
        count = check_count(_count, settings.list_default_count, settings.list_max_count)
        given = {"patient": patient, "subject": subject, "status": status,
                 "identifier": identifier}
        params = [(name, value) for name, value in given.items() if value is not None]
        return await info.context.repo.search(params, count, check_offset(_offset))

    @strawberry.field(name="ImagingStudyHistory", description="Every stored version of a "
                      "study, newest first. A deleted study keeps its history.")
    async def imaging_study_history(
        self, info: Info, id: strawberry.ID,
        _count: Annotated[int | None, _arg("How many versions at most (default 100).")] = None,
    ) -> list[ImagingStudy]:
        count = check_count(_count, 100, info.context.settings.history_max_count)
        return await info.context.repo.history(id, count)
