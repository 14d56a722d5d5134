"""FHIR data in and out: FHIR JSON files and Bundles, DICOM headers mapped to R5 and ingested,
and the demo data."""
