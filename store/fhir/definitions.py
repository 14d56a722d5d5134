"""The R5 element tables the rules walk: ImagingStudy from its StructureDefinition, the
datatypes it uses written out from the R5 datatype pages, and the bound code lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

R5_DIR = Path(__file__).parent / "r5"
DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a resource, backbone element or datatype."""

    name: str
    type: str  # a FHIR type code; "BackboneElement" children live under the element's path
    required: bool = False
    many: bool = False
    targets: tuple[str, ...] = ()
    definition: str = ""


def _el(
    name: str,
    type_: str,
    definition: str,
    *,
    required: bool = False,
    many: bool = False,
    targets: tuple[str, ...] = (),
) -> Element:
    return Element(name, type_, required, many, targets, definition)


_ELEMENT_ID = _el(
    "id",
    "string",
    "Unique id for the element within a resource (for internal "
    "references). This may be any string value that does not contain spaces.",
)
_EXTENSION = _el(
    "extension",
    "Extension",
    "May be used to represent additional information that "
    "is not part of the basic definition of the element.",
    many=True,
)

# R5 datatype definitions (hl7.org/fhir/R5/datatypes.html, references.html, narrative.html,
# resource.html#Meta, extensibility.html). Every datatype also has `id` and `extension`.
DATATYPES: dict[str, dict[str, Element]] = {
    name: {e.name: e for e in (_ELEMENT_ID, _EXTENSION, *elements)}
    for name, elements in {
        "Identifier": (
            _el("use", "code", "The purpose of this identifier."),
            _el(
                "type",
                "CodeableConcept",
                "A coded type for the identifier that can be used to "
                "determine which identifier to use for a specific purpose.",
            ),
            _el(
                "system",
                "uri",
                "Establishes the namespace for the value - that is, an absolute "
                "URL that describes a set values that are unique.",
            ),
            _el(
                "value",
                "string",
                "The portion of the identifier typically relevant to the user "
                "and which is unique within the context of the system.",
            ),
            _el("period", "Period", "Time period during which identifier is/was valid for use."),
            _el(
                "assigner",
                "Reference",
                "Organization that issued/manages the identifier.",
                targets=("Organization",),
            ),
        ),
        "CodeableConcept": (
            _el(
                "coding",
                "Coding",
                "A reference to a code defined by a terminology system.",
                many=True,
            ),
            _el(
                "text",
                "string",
                "A human language representation of the concept as "
                "seen/selected/uttered by the user who entered the data and/or which represents "
                "the intended meaning of the user.",
            ),
        ),
        "Coding": (
            _el(
                "system",
                "uri",
                "The identification of the code system that defines the meaning "
                "of the symbol in the code.",
            ),
            _el(
                "version",
                "string",
                "The version of the code system which was used when choosing this code.",
            ),
            _el("code", "code", "A symbol in syntax defined by the system."),
            _el(
                "display",
                "string",
                "A representation of the meaning of the code in the "
                "system, following the rules of the system.",
            ),
            _el(
                "userSelected",
                "boolean",
                "Indicates that this coding was chosen by a user "
                "directly - e.g. off a pick list of available items (codes or displays).",
            ),
        ),
        "Reference": (
            _el(
                "reference",
                "string",
                "A reference to a location at which the other resource is "
                "found: a relative URL (Type/id), an absolute URL, or #id of a contained "
                "resource.",
            ),
            _el(
                "type",
                "uri",
                "The expected type of the target of the reference, e.g. "
                '"Patient" (a resource type name when it is a FHIR resource).',
            ),
            _el(
                "identifier",
                "Identifier",
                "An identifier for the target resource, used when "
                "there is no way to reference the other resource directly.",
            ),
            _el(
                "display",
                "string",
                "Plain text narrative that identifies the resource in "
                "addition to the resource reference.",
            ),
        ),
        "CodeableReference": (
            _el(
                "concept",
                "CodeableConcept",
                "A reference to a concept - e.g. the information is "
                "identified by its general class to the degree of precision found in the "
                "terminology.",
            ),
            _el(
                "reference",
                "Reference",
                "A reference to a resource the provides exact details "
                "about the information being referenced.",
            ),
        ),
        "Annotation": (
            _el(
                "authorReference",
                "Reference",
                "The individual responsible for making the annotation.",
                targets=(
                    "Practitioner",
                    "PractitionerRole",
                    "Patient",
                    "RelatedPerson",
                    "Organization",
                ),
            ),
            _el("authorString", "string", "The individual responsible for making the annotation."),
            _el("time", "dateTime", "Indicates when this particular annotation was made."),
            _el(
                "text", "markdown", "The text of the annotation in markdown format.", required=True
            ),
        ),
        "Meta": (
            _el(
                "versionId",
                "id",
                "The version specific identifier, as it appears in the "
                "version portion of the URL. Server-owned.",
            ),
            _el(
                "lastUpdated",
                "instant",
                "When the resource last changed - e.g. when the version changed. Server-owned.",
            ),
            _el("source", "uri", "A uri that identifies the source system of the resource."),
            _el(
                "profile",
                "canonical",
                "A list of profiles (references to StructureDefinition "
                "resources) that this resource claims to conform to.",
                many=True,
            ),
            _el("security", "Coding", "Security labels applied to this resource.", many=True),
            _el("tag", "Coding", "Tags applied to this resource.", many=True),
        ),
        "Narrative": (
            _el(
                "status",
                "code",
                "The status of the narrative - whether it's entirely "
                "generated (from just the defined data or the extensions too), or whether a "
                "human authored it and it may contain additional data.",
                required=True,
            ),
            _el(
                "div",
                "xhtml",
                "The actual narrative content, a stripped down version of XHTML.",
                required=True,
            ),
        ),
        "Period": (
            _el("start", "dateTime", "The start of the period. The boundary is inclusive."),
            _el(
                "end",
                "dateTime",
                "The end of the period. If the end of the period is missing, "
                "it means no end was known or planned at the time the instance was created.",
            ),
        ),
        "Extension": (
            _el(
                "url",
                "uri",
                "Source of the definition for the extension code - a logical name or a URL.",
                required=True,
            ),
            _el(
                "value[x]",
                "*",
                "Value of extension - must be one of a constrained set of the data types.",
            ),
        ),
    }.items()
}

DATATYPE_DEFINITIONS = {
    "Identifier": "An identifier - identifies some entity uniquely and unambiguously.",
    "CodeableConcept": "A concept that may be defined by a formal reference to a terminology or "
    "ontology or may be provided by text.",
    "Coding": "A reference to a code defined by a terminology system.",
    "Reference": "A reference from one resource to another.",
    "CodeableReference": "A reference to a resource (by instance), or instead, a reference to a "
    "concept defined in a terminology or ontology (by class).",
    "Annotation": "A text note which also contains information about who made the statement and "
    "when.",
    "Meta": "The metadata about a resource. This is content in the resource that is maintained by "
    "the infrastructure.",
    "Narrative": "A human-readable summary of the resource conveying the essential clinical and "
    "business information for the resource.",
    "Period": "A time period defined by a start and end date and optionally time.",
    "Extension": "Optional Extension Element - found in all resources.",
}

# The value[x] types an Extension may carry (R5 "open" type list).
EXTENSION_VALUE_TYPES = (
    "base64Binary boolean canonical code date dateTime decimal id instant integer integer64 "
    "markdown oid positiveInt string time unsignedInt uri url uuid Address Age Annotation "
    "Attachment CodeableConcept CodeableReference Coding ContactPoint Count Distance Duration "
    "HumanName Identifier Money Period Quantity Range Ratio RatioRange Reference SampledData "
    "Signature Timing ContactDetail DataRequirement Expression ParameterDefinition "
    "RelatedArtifact TriggerDefinition UsageContext Availability ExtendedContactDetail Dosage Meta"
).split()
EXTENSION_VALUE_KEYS = {"value" + t[0].upper() + t[1:]: t for t in EXTENSION_VALUE_TYPES}
EXTENSION_ELEMENTS = {k: v for k, v in DATATYPES["Extension"].items() if k != "value[x]"}

# The R5 primitive types, whose JSON may carry a `_name` sibling with the value's id and
# extensions (json.html#primitive).
PRIMITIVE_TYPES = frozenset(
    (
        "base64Binary boolean canonical code date dateTime decimal id instant integer integer64 "
        "markdown oid positiveInt string time unsignedInt uri url uuid"
    ).split()
)
PRIMITIVE_PARTS = {e.name: e for e in (_ELEMENT_ID, _EXTENSION)}


def takes_extensions(parent: str, element: Element) -> bool:
    """Whether `element` of `parent` (a type name or an ImagingStudy path) may have a `_name`
    sibling in JSON. Not any `id`: R5 types the resource's id and the ids of elements as
    System.String (the id of an element is an XML attribute), which carry no id or
    extensions, so `_id` is not R5 JSON anywhere; nor Extension.url, an attribute too; nor
    xhtml, which has no id or extensions in R5."""
    if element.type not in PRIMITIVE_TYPES or element.name == "id":
        return False
    return not (parent == "Extension" and element.name == "url")


# The official R5 example-xr points `procedure` at a Procedure, which the R5 definition does not
# list (PlanDefinition | ActivityDefinition). Real data follows the example, so we accept it.
TARGET_TOLERANCES = {"ImagingStudy.procedure": ("Procedure",)}


def _type_code(raw: str) -> str:
    # The SD gives the element id type as a FHIRPath system type URL.
    return "string" if raw.startswith("http://hl7.org/fhirpath/") else raw


@cache
def imaging_study() -> dict[str, dict[str, Element]]:
    """Elements of ImagingStudy keyed by parent path ("ImagingStudy.series", ...)."""
    sd = json.loads((R5_DIR / "StructureDefinition-ImagingStudy.json").read_text())
    table: dict[str, dict[str, Element]] = {}
    for raw in sd["snapshot"]["element"][1:]:
        parent, _, name = raw["path"].rpartition(".")
        type_ = raw["type"][0]
        targets = tuple(p.rsplit("/", 1)[-1] for p in type_.get("targetProfile", ()))
        targets += TARGET_TOLERANCES.get(raw["path"], ())
        code = _type_code(type_["code"])
        if parent == "ImagingStudy" and name == "id":
            code = "id"
        table.setdefault(parent, {})[name] = Element(
            name, code, raw["min"] == 1, raw["max"] == "*", targets, raw["definition"]
        )
    return table


@cache
def resource_definition() -> str:
    sd = json.loads((R5_DIR / "StructureDefinition-ImagingStudy.json").read_text())
    definition: str = sd["snapshot"]["element"][0]["definition"]
    return definition


@cache
def status_codes() -> dict[str, str]:
    """The R5 ImagingStudyStatus codes with their definitions, in value set order."""
    cs = json.loads((R5_DIR / "CodeSystem-imagingstudy-status.json").read_text())
    return {c["code"]: c["definition"] for c in cs["concept"]}


@cache
def dicom_modalities() -> frozenset[str]:
    """DICOM CID 33 modality codes, the extensible binding of modality and series.modality."""
    vs = json.loads((R5_DIR / "dicom-cid33-modality.json").read_text())
    return frozenset(c["code"] for c in vs["codes"])


NARRATIVE_STATUS = ("generated", "extensions", "additional", "empty")
IDENTIFIER_USE = ("usual", "official", "temp", "secondary", "old")


# Search parameters that apply to ImagingStudy through shared R5 definitions (no file here).
_SHARED_SEARCH = {
    "identifier": (
        "token",
        "ImagingStudy.identifier",
        "Identifiers for the Study, such as DICOM Study Instance UID",
    ),
    "patient": (
        "reference",
        "ImagingStudy.subject.where(resolve() is Patient)",
        "Who the study is about",
    ),
    "encounter": ("reference", "ImagingStudy.encounter", "The context of the study"),
}


@cache
def search_parameters() -> dict[str, tuple[str, str, str]]:
    """code -> (type, FHIRPath expression, description) for the 17 R5 ImagingStudy search
    parameters. `reason` has no expression in R5."""
    found = dict(_SHARED_SEARCH)
    for path in sorted(R5_DIR.glob("SearchParameter-ImagingStudy-*.json")):
        sp = json.loads(path.read_text())
        found[sp["code"]] = (sp["type"], sp.get("expression", ""), sp["description"])
    return dict(sorted(found.items()))
