"""FHIR JSON moved between files and a target: the local store (through the access gate) or a
running server (over GraphQL). Shared by the CLI and the HTTP service's start-up preload."""
