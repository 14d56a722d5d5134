"""Pure R5 rules on FHIR JSON: no I/O, no database, nothing of the rest of the project."""

from typing import Any, TypeAlias

# The one data shape (docs/ARCHITECTURE.md): an ImagingStudy as FHIR R5 JSON, a plain dict as
# `json.loads` gives it. Its elements are checked by store/fhir/validate.py, not by the type
# checker, so the values stay `Any`; the alias says where a whole study flows.
Study: TypeAlias = dict[str, Any]
