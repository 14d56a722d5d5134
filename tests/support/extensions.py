"""A primitive extension (R5 JSON `_name` siblings) for the tests that carry one."""

from __future__ import annotations

NOTE = "http://example.org/fhir/StructureDefinition/note"
EXT = [{"url": NOTE, "valueString": "as told by the patient"}]
