"""FHIR Bundles in: what an import payload may carry (one ImagingStudy, or a Bundle of R5
elements whose entries ask only for what import does) and how an entry's Study Instance UID is
searched for. The Importer (store/interop/importer.py) matches and writes the entries."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from store.fhir import Study
from store.fhir.definitions import DICOM_UID_SYSTEM
from store.fhir.outcome import BAD_USER_INPUT, fail
from store.mongo.search import escape

BUNDLE_TYPES = ("collection", "batch", "transaction", "searchset")
BUNDLE_ELEMENTS = {
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "identifier",
    "type",
    "timestamp",
    "total",
    "link",
    "entry",
    "signature",
    "issues",
}
ENTRY_ELEMENTS = {
    "id",
    "extension",
    "modifierExtension",
    "link",
    "fullUrl",
    "resource",
    "search",
    "request",
    "response",
}


def study_uid_token(resource: Study) -> str | None:
    """The search token `urn:dicom:uid|<value>` of the first Study Instance UID identifier."""
    for identifier in resource.get("identifier") or ():
        if (
            isinstance(identifier, dict)
            and identifier.get("system") == DICOM_UID_SYSTEM
            and isinstance(identifier.get("value"), str)
        ):
            return f"{DICOM_UID_SYSTEM}|{escape(identifier['value'])}"
    return None


def study_uid_condition(resource: Study) -> str | None:
    """The If-None-Exist condition that finds a study by its Study Instance UID."""
    token = study_uid_token(resource)
    return None if token is None else "identifier=" + quote(token, safe=":|/")


def entries(resource: Any) -> tuple[str | None, list[Any]]:
    """(Bundle type or None, the resources to import) of an import payload."""
    if not isinstance(resource, dict):
        raise fail(BAD_USER_INPUT, "resource", "must be a FHIR resource (a JSON object)")
    if resource.get("resourceType") != "Bundle":
        return None, [resource]
    kind = resource.get("type")
    if kind not in BUNDLE_TYPES:
        raise fail(
            BAD_USER_INPUT,
            "Bundle.type",
            f"'{kind}' Bundles are not imported; use one of {', '.join(BUNDLE_TYPES)}",
        )
    unknown = sorted(set(resource) - BUNDLE_ELEMENTS)
    if unknown:
        raise fail(BAD_USER_INPUT, f"Bundle.{unknown[0]}", "is not an R5 Bundle element")
    items = resource.get("entry", [])
    if not isinstance(items, list):
        raise fail(BAD_USER_INPUT, "Bundle.entry", "must be a list")
    for index, entry in enumerate(items):
        if isinstance(entry, dict):
            _check_entry(entry, f"Bundle.entry[{index}]")
    return kind, [e.get("resource") if isinstance(e, dict) else None for e in items]


def _check_entry(entry: dict[str, Any], where: str) -> None:
    """An entry's elements are R5's, and its request asks only for what import does (a
    create or an update of the resource): an ifMatch or a DELETE quietly ignored would be
    a write the client did not ask for."""
    unknown = sorted(set(entry) - ENTRY_ELEMENTS)
    if unknown:
        raise fail(BAD_USER_INPUT, f"{where}.{unknown[0]}", "is not an R5 Bundle.entry element")
    request = entry.get("request")
    if request is None:
        return
    if not isinstance(request, dict):
        raise fail(BAD_USER_INPUT, f"{where}.request", "must be an object")
    if request.get("method") not in (None, "POST", "PUT"):
        raise fail(
            BAD_USER_INPUT,
            f"{where}.request.method",
            "import creates or updates the "
            "entry's resource (POST or PUT); delete studies with ImagingStudyDelete",
        )
    url = request.get("url")
    if url is not None:
        resource = entry.get("resource")
        target = resource.get("id") if isinstance(resource, dict) else None
        wanted = (
            "ImagingStudy"
            if request.get("method") == "POST" or target is None
            else f"ImagingStudy/{target}"
        )
        if url != wanted:
            raise fail(
                BAD_USER_INPUT,
                f"{where}.request.url",
                f"must be '{wanted}' for this "
                "entry (the resource it carries), not another study or a search",
            )
    for name in ("ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"):
        if name in request:
            raise fail(
                BAD_USER_INPUT,
                f"{where}.request.{name}",
                "conditional requests are not "
                "supported by import (matching is by Study Instance UID, then id); use "
                "ImagingStudyUpdate with versionId or ImagingStudyCreate with "
                "ifNoneExist",
            )
