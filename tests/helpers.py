"""Shared test helpers: GraphQL snippets, error access and FHIR JSON comparison."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLUnionType

from api.graphql.schema import schema

CREATE = """mutation($res: ImagingStudyInput!, $ine: String) {
  ImagingStudyCreate(res: $res, ifNoneExist: $ine) { id status meta { versionId } } }"""
STATUS = """mutation($id: ID!, $status: String!, $v: String) {
  ImagingStudySetStatus(id: $id, status: $status, versionId: $v) { status meta { versionId } } }"""
GET = "query($id: ID!) { ImagingStudy(id: $id) { id status meta { versionId } } }"


def text_message(frame: str | bytes) -> dict[str, Any]:
    """A graphql-transport-ws message, asserting it came as a text frame: the reference
    clients (graphql-ws, Apollo, gql) reject binary frames, which json.loads would accept."""
    assert isinstance(frame, str), f"binary WebSocket frame: {frame[:80]!r}"
    message: dict[str, Any] = json.loads(frame)
    return message


def error(body: dict[str, Any]) -> dict[str, Any]:
    """The single error of a response, asserting there is exactly one."""
    assert body.get("errors"), body
    assert len(body["errors"]) == 1, body["errors"]
    return body["errors"][0]


def expressions(body: dict[str, Any]) -> list[str]:
    """Every FHIRPath the error's OperationOutcome names."""
    outcome = error(body)["extensions"]["resource"]
    return [e for issue in outcome["issue"] for e in issue.get("expression", ())]


def selection(type_name: str, depth: int = 0) -> str:
    """A selection of every field of a schema type, down to six levels, but the `_name`
    fields, which would more than double it."""
    gql_type = schema._schema.type_map[type_name]
    assert isinstance(gql_type, GraphQLObjectType)
    parts = []
    for name, field in gql_type.fields.items():
        if name.startswith("_"):
            continue  # `_name` (ids and extensions of primitives): test_primitive_extensions
        inner = field.type
        while isinstance(inner, GraphQLNonNull | GraphQLList):
            inner = inner.of_type
        if isinstance(inner, GraphQLObjectType):
            if depth > 5 or (inner.name == "Extension" and depth > 1):
                continue  # FHIR types nest cyclically (Reference -> Identifier -> Reference)
            parts.append(f"{name} {{ {selection(inner.name, depth + 1)} }}")
        elif isinstance(inner, GraphQLUnionType):
            continue  # Reference.resource follows a reference: not an element of the study
        else:
            parts.append(name)
    return " ".join(parts)


def prune(value: Any) -> Any:
    """A GraphQL response with its nulls left out: the FHIR JSON it stands for."""
    if isinstance(value, dict):
        return {k: prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


class LoopTicks:
    """Counts event-loop turns while the block runs: a call that holds the loop stops it."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
