"""Structural and R5 rule checks of an ImagingStudy as FHIR JSON. Every violation becomes one
Issue naming the element by FHIRPath; all violations of a resource are reported together."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from store.fhir import definitions as defs
from store.fhir.outcome import Issue
from store.fhir.primitives import CHECKS, language_problem
from store.fhir.references import is_resource_type, reference_problems
from store.fhir.uid import oid_uid_problem, uid_problem

ROOT = "ImagingStudy"
# Series per study. Each is priced at this cap by the query cost; a study of 20,000 series
# made one query return hundreds of MB while priced as 20.
MAX_SERIES = 1_000
_JSON_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESOURCE_TYPE = defs.Element("resourceType", "code", definition="The resource type.")


def _status_problem(value: object) -> str | None:
    codes = defs.status_codes()
    return None if value in codes else f"must be one of {', '.join(codes)} (R5 ImagingStudyStatus)"


def _modality_problems(concept: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for i, coding in enumerate(concept.get("coding") or ()):
        if (
            isinstance(coding, dict)
            and coding.get("system") == defs.DICOM_SYSTEM
            and coding.get("code") not in defs.dicom_modalities()
        ):
            yield (
                f".coding[{i}].code",
                f"'{coding.get('code')}' is not a DICOM CID 33 modality code",
            )


def _sop_class_problems(coding: dict[str, Any]) -> Iterable[tuple[str, str]]:
    code = coding.get("code")
    if isinstance(code, str) and code.startswith("urn:oid:"):
        problem = oid_uid_problem(code)
        if problem:
            yield ".code", f"the SOP class code is not valid: {problem}"


def _identifier_problems(identifier: dict[str, Any]) -> Iterable[tuple[str, str]]:
    if identifier.get("use") is not None and identifier["use"] not in defs.IDENTIFIER_USE:
        yield ".use", f"must be one of {', '.join(defs.IDENTIFIER_USE)}"
    if identifier.get("system") == defs.DICOM_UID_SYSTEM:
        problem = oid_uid_problem(identifier.get("value"))
        if problem:
            yield ".value", f"a Study Instance UID identifier (urn:dicom:uid) {problem}"


def _narrative_problems(narrative: dict[str, Any]) -> Iterable[tuple[str, str]]:
    if narrative.get("status") not in (None, *defs.NARRATIVE_STATUS):
        yield ".status", f"must be one of {', '.join(defs.NARRATIVE_STATUS)}"


# Primitive checks beyond the type, keyed by element path.
_VALUE_RULES: dict[str, Callable[[object], str | None]] = {
    "ImagingStudy.status": _status_problem,
    "ImagingStudy.language": language_problem,
    "ImagingStudy.series.uid": uid_problem,
    "ImagingStudy.series.instance.uid": uid_problem,
}
# Checks on complex values, keyed by element path or by datatype.
_OBJECT_RULES: dict[str, Callable[[dict[str, Any]], Iterable[tuple[str, str]]]] = {
    "ImagingStudy.modality": _modality_problems,
    "ImagingStudy.series.modality": _modality_problems,
    "ImagingStudy.series.instance.sopClass": _sop_class_problems,
    "Identifier": _identifier_problems,
    "Narrative": _narrative_problems,
}


class _Walker:
    def __init__(self, contained: dict[str, str]) -> None:
        self.issues: list[Issue] = []
        self.contained = contained

    def add(self, expression: str, rule: str) -> None:
        self.issues.append(Issue(expression, rule))

    def fields(
        self,
        obj: object,
        expr: str,
        elements: dict[str, defs.Element],
        key: str,
        targets: tuple[str, ...] = (),
    ) -> bool:
        if not isinstance(obj, dict):
            self.add(expr, "must be an object")
            return False
        before = len(self.issues)
        for name, value in obj.items():
            if isinstance(name, str) and name.startswith("_"):
                self.primitive_sibling(obj, name, value, expr, elements, key)
                continue
            element = elements.get(name)
            if element is None:
                self.add(f"{expr}.{name}", f"unknown element '{name}': not part of R5 {key}")
            else:
                self.element(
                    element, value, f"{expr}.{name}", f"{key}.{name}", targets, obj.get(f"_{name}")
                )
        for element in elements.values():
            if element.required and obj.get(element.name) is None:
                rule = f"{element.name} is required (cardinality 1..1)"
                if f"_{element.name}" in obj:
                    # R5 lets an element be present with extensions alone; this server needs
                    # the values of its required primitives (status, UIDs): see README.
                    rule += f": an id or extension in _{element.name} does not replace its value"
                self.add(f"{expr}.{element.name}", rule)
        return len(self.issues) == before

    def element(
        self,
        element: defs.Element,
        value: object,
        expr: str,
        key: str,
        targets: tuple[str, ...],
        sibling: object = None,
    ) -> None:
        if value is None:
            self.add(expr, "must not be null: leave the element out instead")
        elif element.many:
            if not isinstance(value, list):
                self.add(expr, "must be a list")
            elif not value:
                self.add(expr, "must not be an empty list: leave the element out instead")
            else:
                for i, item in enumerate(value):
                    if item is None and element.type in defs.PRIMITIVE_TYPES:
                        # A repeating primitive's value may be missing where its _name item
                        # carries an id or extensions (json.html#primitive).
                        if _item(sibling, i) is None:
                            self.add(
                                f"{expr}[{i}]",
                                f"must not be null unless "
                                f"_{element.name}[{i}] carries its id or extensions",
                            )
                        continue
                    self.value(element, item, f"{expr}[{i}]", key, targets)
        elif isinstance(value, list):
            self.add(expr, "must be a single value, not a list (cardinality 0..1)")
        else:
            self.value(element, value, expr, key, targets)

    def value(
        self, element: defs.Element, value: object, expr: str, key: str, targets: tuple[str, ...]
    ) -> None:
        type_ = element.type
        own_targets = element.targets or targets
        if type_ in CHECKS:
            # An element rule (a DICOM UID, a bound code) says more than its type's rule.
            problem = _VALUE_RULES.get(key, _none)(value) or CHECKS[type_](value)
            if problem:
                self.add(expr, problem)
        elif type_ == "BackboneElement":
            self.checked(value, expr, defs.imaging_study()[key], key, key)
        elif type_ == "Resource":
            self.contained_resource(value, expr)
        elif type_ == "Extension":
            self.extension(value, expr)
        elif type_ in defs.DATATYPES:
            self.checked(value, expr, defs.DATATYPES[type_], type_, key, own_targets)
        else:  # pragma: no cover - the tables name no other type
            raise AssertionError(f"no rule for FHIR type {type_}")

    def checked(
        self,
        value: object,
        expr: str,
        elements: dict[str, defs.Element],
        type_: str,
        key: str,
        targets: tuple[str, ...] = (),
    ) -> None:
        if not self.fields(value, expr, elements, type_, targets):
            return
        assert isinstance(value, dict)
        rules = [_OBJECT_RULES.get(key), _OBJECT_RULES.get(type_)]
        for rule in filter(None, rules):
            for sub, problem in rule(value):
                self.add(expr + sub, problem)
        if type_ == "Reference":
            for sub, problem in reference_problems(value, targets, self.contained):
                self.add(expr + sub, problem)

    def primitive_sibling(
        self,
        obj: dict[str, Any],
        name: str,
        value: object,
        expr: str,
        elements: dict[str, defs.Element],
        key: str,
    ) -> None:
        """`_name`: the id and extensions of primitive element `name` (R5 JSON, "JSON
        representation of primitive elements"): an object, or for a repeating primitive a
        list aligned by position with `name`, null where an item has neither."""
        where = f"{expr}.{name}"
        base = name[1:]
        element = elements.get(base)
        if element is None:
            self.add(
                where,
                f"unknown element '{name}': R5 {key} has no element '{base}' "
                f"whose id or extensions it could carry",
            )
            return
        if not defs.takes_extensions(key, element):
            self.add(
                where,
                f"unknown element '{name}': {key}.{base} is not a primitive "
                "element that carries an id or extensions in R5 JSON",
            )
            return
        given = obj.get(base)
        if not element.many:
            if isinstance(value, list):
                self.add(where, "must be a single object, not a list (cardinality 0..1)")
            else:
                self.primitive_parts(value, where, base)
            return
        if not isinstance(value, list):
            self.add(
                where,
                f"must be a list aligned by position with {base} (a repeating "
                "primitive), null where an item has no id or extensions",
            )
            return
        if not value:
            self.add(where, "must not be an empty list: leave the element out instead")
            return
        if isinstance(given, list) and len(given) != len(value):
            self.add(
                where,
                f"must have as many items as {base} ({len(given)}), aligned by "
                "position, null where an item has no id or extensions",
            )
            return
        for i, item in enumerate(value):
            if item is None:
                if _item(given, i) is None:
                    self.add(
                        f"{where}[{i}]",
                        f"null here and in {base}[{i}]: an item needs a value, an id or extensions",
                    )
            else:
                self.primitive_parts(item, f"{where}[{i}]", base)

    def primitive_parts(self, value: object, expr: str, base: str) -> None:
        if not isinstance(value, dict):
            self.add(expr, f"must be an object holding the id and/or extensions of {base}")
        elif not value:
            self.add(
                expr,
                f"must not be empty: it holds the id and/or extensions of {base}, "
                "else leave it out",
            )
        else:
            self.fields(
                value, expr, defs.PRIMITIVE_PARTS, "primitive element (only id and extension)"
            )

    def extension(self, value: object, expr: str) -> None:
        if not isinstance(value, dict):
            self.add(expr, "must be an object")
            return
        values = {k: v for k, v in value.items() if k.startswith("value")}
        # `_valueCode` and the like: the id and extensions of a primitive value[x].
        siblings = {k: v for k, v in value.items() if k.startswith("_value")}
        rest = {k: v for k, v in value.items() if k not in values and k not in siblings}
        if not self.fields(rest, expr, defs.EXTENSION_ELEMENTS, "Extension"):
            return
        for name, item in siblings.items():
            type_ = defs.EXTENSION_VALUE_KEYS.get(name[1:])
            self.primitive_sibling(
                value,
                name,
                item,
                expr,
                {name[1:]: defs.Element(name[1:], type_)} if type_ else {},
                "Extension",
            )
        present = values.keys() | {k[1:] for k in siblings}
        if len(present) > 1:
            self.add(expr, "an Extension carries at most one value[x]")
        if present and "extension" in value:
            self.add(expr, "an Extension has either a value[x] or nested extensions, not both")
        if not present and "extension" not in value:
            self.add(expr, "an Extension needs a value[x] or nested extensions")
        for name, item in values.items():
            type_ = defs.EXTENSION_VALUE_KEYS.get(name)
            if type_ is None:
                self.add(f"{expr}.{name}", f"unknown element '{name}': not an R5 value[x] type")
            elif type_ in CHECKS or type_ in defs.DATATYPES:
                self.value(defs.Element(name, type_), item, f"{expr}.{name}", type_, ())
            elif not isinstance(item, dict):
                self.add(f"{expr}.{name}", f"a {type_} value must be an object")
            else:
                self.json_names(item, f"{expr}.{name}")

    def contained_resource(self, value: object, expr: str) -> None:
        if not isinstance(value, dict):
            self.add(expr, "a contained resource must be an object")
            return
        if not is_resource_type(value.get("resourceType")):
            self.add(f"{expr}.resourceType", "a contained resource needs a resourceType")
        if CHECKS["id"](value.get("id")):
            self.add(f"{expr}.id", "a contained resource needs an id (FHIR id syntax)")
        if "meta" in value and not isinstance(value["meta"], dict):
            self.add(f"{expr}.meta", "must be an object")
        self.json_names(value, expr)

    def json_names(self, value: object, expr: str) -> None:
        """Content carried as JSON (contained resources, value[x] of types not modelled here)
        is not checked element by element, but its names must be FHIR element names: never
        `$...` or dotted, which a document store would read as operators or paths."""
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or not _JSON_NAME.fullmatch(key):
                    self.add(
                        f"{expr}.{key}",
                        "not a FHIR element name (letters, digits and "
                        "'_', starting with a letter or '_')",
                    )
                else:
                    self.json_names(item, f"{expr}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.json_names(item, f"{expr}[{i}]")


def _none(_: object) -> None:
    return None


def _item(items: object, index: int) -> object:
    """Item `index` of `items` when it is a list that long, else None."""
    return items[index] if isinstance(items, list) and index < len(items) else None


def _contained_ids(study: dict[str, Any]) -> dict[str, str]:
    contained = study.get("contained")
    if not isinstance(contained, list):
        return {}
    return {
        r["id"]: r.get("resourceType", "")
        for r in contained
        if isinstance(r, dict) and isinstance(r.get("id"), str)
    }


def structure_issues(study: object) -> list[Issue]:
    """Every element-level violation: unknown elements, cardinality, types, codes, UIDs,
    references. Cross-element rules (uniqueness, size) live in `study_issues`."""
    if not isinstance(study, dict):
        return [Issue(ROOT, "an ImagingStudy must be a JSON object")]
    walker = _Walker(_contained_ids(study))
    elements = {"resourceType": _RESOURCE_TYPE, **defs.imaging_study()[ROOT]}
    if study.get("resourceType", ROOT) != ROOT:
        walker.add(f"{ROOT}.resourceType", "must be 'ImagingStudy'")
    walker.fields(study, ROOT, elements, ROOT)
    return walker.issues


def uid_issues(study: dict[str, Any]) -> list[Issue]:
    """Series UIDs unique in the study; an instance UID in at most one place in the study."""
    issues: list[Issue] = []
    series_seen: dict[str, int] = {}
    instance_seen: dict[str, str] = {}
    for s, series in enumerate(study.get("series") or ()):
        uid = series.get("uid")
        if uid in series_seen:
            issues.append(
                Issue(
                    f"{ROOT}.series[{s}].uid",
                    f"series UID {uid} is already used by ImagingStudy.series[{series_seen[uid]}]",
                )
            )
        series_seen.setdefault(uid, s)
        for i, instance in enumerate(series.get("instance") or ()):
            uid = instance.get("uid")
            where = f"{ROOT}.series[{s}].instance[{i}]"
            if uid in instance_seen:
                issues.append(
                    Issue(
                        f"{where}.uid",
                        f"instance UID {uid} is already used by {instance_seen[uid]}",
                    )
                )
            else:
                instance_seen[uid] = where
    return issues


def count_instances(study: dict[str, Any]) -> int:
    return sum(len(s.get("instance") or ()) for s in study.get("series") or ())


def size_issues(
    study: dict[str, Any], max_instances: int, max_series: int, written: bool = False
) -> list[Issue]:
    """The study over the series or instance cap (`written`: the result of a partial write)."""
    issues = []
    said = "this write would make it" if written else "this one lists"
    series = len(study.get("series") or ())
    if series > max_series:
        issues.append(
            Issue(
                f"{ROOT}.series", f"a study may list at most {max_series} series; {said} {series}"
            )
        )
    total = count_instances(study)
    if total > max_instances:
        issues.append(
            Issue(
                f"{ROOT}.series",
                f"a study may list at most {max_instances} instances; {said} {total}",
            )
        )
    return issues


def validate(study: object, max_instances: int, max_series: int = MAX_SERIES) -> list[Issue]:
    """All violations of `study`: structure first; the cross-element rules once it is sound."""
    issues = structure_issues(study)
    if issues:
        return issues
    assert isinstance(study, dict)
    return size_issues(study, max_instances, max_series) + uid_issues(study)


def part_issues(study: dict[str, Any], key: str, value: object, expr: str) -> list[Issue]:
    """Violations of one new part (a series or an instance) at its place `expr` in `study`,
    so a batch added to a large study is checked without walking the whole study again."""
    parent, _, name = key.rpartition(".")
    element = defs.imaging_study()[parent][name]
    walker = _Walker(_contained_ids(study))
    walker.value(element, value, expr, key, ())
    return walker.issues
