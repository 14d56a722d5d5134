"""GraphQL from a test's side: operation snippets, posting an operation (with a bearer token or
none), reading its errors, a selection of every field, and FHIR JSON comparison."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLUnionType

from api.graphql.schema import schema

CREATE = """mutation($res: ImagingStudyInput!, $ine: String) {
  ImagingStudyCreate(res: $res, ifNoneExist: $ine) { id status meta { versionId } } }"""
STATUS = """mutation($id: ID!, $status: String!, $v: String) {
  ImagingStudySetStatus(id: $id, status: $status, versionId: $v) { status meta { versionId } } }"""
GET = "query($id: ID!) { ImagingStudy(id: $id) { id status meta { versionId } } }"

# The conftest's `gql` fixture: POSTs one operation, returns the decoded response body.
Gql = Callable[..., Awaitable[dict[str, Any]]]


async def call(
    http: httpx.AsyncClient, bearer: str | None, query: str, **variables: Any
) -> dict[str, Any]:
    """POSTs one operation with `bearer` as the token (none when None); the response body."""
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    return response.json()


async def post(
    http: httpx.AsyncClient, query: str, bearer: str | None = None, **variables: Any
) -> dict[str, Any]:
    """`call` with the token last, optional."""
    return await call(http, bearer, query, **variables)


def codes(body: dict[str, Any]) -> set[str]:
    """The `extensions.code` of every error of a response."""
    return {e["extensions"]["code"] for e in body.get("errors") or ()}


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
