"""What makes two study resources the same DICOM study, and whose study it is.

This service indexes DICOM studies one to one: R5 allows several ImagingStudy resources for one
Study Instance UID, but here at most one live study carries a given UID (the store enforces it
with a unique index on the key below), and matching on a UID never crosses subjects."""

from __future__ import annotations

from typing import Any

from store.fhir import Study
from store.fhir.definitions import DICOM_UID_SYSTEM
from store.fhir.outcome import Issue
from store.fhir.uid import OID_PREFIX

ROOT = "ImagingStudy"


def study_uids(study: Study) -> list[tuple[int, str]]:
    """(identifier index, UID without its urn:oid: prefix) of every Study Instance UID."""
    found = []
    for index, identifier in enumerate(study.get("identifier") or ()):
        if (
            isinstance(identifier, dict)
            and identifier.get("system") == DICOM_UID_SYSTEM
            and isinstance(identifier.get("value"), str)
        ):
            value = identifier["value"]
            found.append(
                (index, value[len(OID_PREFIX) :] if value.startswith(OID_PREFIX) else value)
            )
    return found


def study_uid(study: Study) -> str | None:
    """The study's one Study Instance UID (the store's unique key), if it has one."""
    uids = study_uids(study)
    return uids[0][1] if uids else None


def uid_element(study: Study) -> str:
    """The FHIRPath of the Study Instance UID identifier, for error messages."""
    uids = study_uids(study)
    return f"{ROOT}.identifier[{uids[0][0]}]" if uids else f"{ROOT}.identifier"


def identity_issues(study: Study) -> list[Issue]:
    """A study is one DICOM study: two different Study Instance UIDs are two studies. The
    system is written exactly, so that no spelling of it escapes the one-study-per-UID key."""
    uids = study_uids(study)
    first = uids[0][1] if uids else None
    issues = [
        Issue(
            f"{ROOT}.identifier[{index}]",
            "a study carries at most one Study Instance "
            f"UID (urn:dicom:uid); identifier[{uids[0][0]}] already gives {first}",
        )
        for index, uid in uids[1:]
        if uid != first
    ]
    for index, identifier in enumerate(study.get("identifier") or ()):
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if (
            isinstance(system, str)
            and system != DICOM_UID_SYSTEM
            and system.lower() == DICOM_UID_SYSTEM
        ):
            issues.append(
                Issue(
                    f"{ROOT}.identifier[{index}].system",
                    f"a Study Instance UID's system is written {DICOM_UID_SYSTEM}, in lower case",
                )
            )
    return issues


def subject_key(study: Study) -> tuple[Any, ...]:
    """What identifies a study's subject: its literal reference, else its identifier."""
    subject = study.get("subject") or {}
    identifier = subject.get("identifier") or {}
    return (subject.get("reference"), identifier.get("system"), identifier.get("value"))


def same_subject(a: Study, b: Study) -> bool:
    return subject_key(a) == subject_key(b)
