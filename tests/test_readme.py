"""The README's examples run as written (issue 11, section 7): every fenced `graphql` block is
sent, in README order, to one app on the seeded embedded store, so a follow-up finds what an
earlier block made. A block must answer without errors and with something in every list it
selects, unless it says `# expect: CODE` (then that error code is what it must get). Variables
come from a ```json block right after it. Subscriptions are parsed and validated against the
schema (running them is the WebSocket tests' job)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse, validate

from api.graphql.schema import schema
from api.http.app import create_app
from api.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_EXPECT = re.compile(r"^\s*# expect: (\w+)\s*$", re.M)


@dataclass
class Example:
    """One fenced graphql block, with its variables and the error it is meant to show."""

    line: int
    query: str
    variables: dict[str, Any] | None
    expect: str | None

    @property
    def subscription(self) -> bool:
        try:
            definitions = parse(self.query).definitions
        except GraphQLError:
            return False  # the server reports the syntax error, with its place
        return any(
            isinstance(d, OperationDefinitionNode) and d.operation is OperationType.SUBSCRIPTION
            for d in definitions
        )


def examples(text: str) -> list[Example]:
    """The graphql blocks of `text`; a ```json block separated from one only by blank lines
    holds its variables."""
    fences = list(_FENCE.finditer(text))
    found = []
    for n, fence in enumerate(fences):
        if fence[1] != "graphql":
            continue
        following = fences[n + 1] if n + 1 < len(fences) else None
        variables = None
        if (
            following is not None
            and following[1] == "json"
            and not text[fence.end() : following.start()].strip()
        ):
            variables = json.loads(following[2])
        expect = _EXPECT.search(fence[2])
        found.append(
            Example(
                text.count("\n", 0, fence.start()) + 1,
                fence[2],
                variables,
                expect[1] if expect else None,
            )
        )
    return found


def empty_lists(value: Any, path: str = "data") -> list[str]:
    """Where `value` holds an empty list: an example that shows nothing there shows nothing."""
    if isinstance(value, list):
        if not value:
            return [path]
        return [p for n, item in enumerate(value) for p in empty_lists(item, f"{path}[{n}]")]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in empty_lists(item, f"{path}.{key}")]
    return []


def test_blocks_are_found_with_their_variables_and_expectations() -> None:
    text = (
        '```graphql\nquery($p: [String!]) { a(p: $p) }\n```\n\n```json\n{"p": ["x"]}\n'
        "```\nprose\n```graphql\nmutation { b }  # expect: NOT_FOUND\n```\n"
        "```graphql\n# expect: NOT_FOUND\nmutation { b }\n```\nprose\n```json\n{}\n```\n"
    )
    first, second, third = examples(text)
    assert (first.line, first.variables, first.expect) == (1, {"p": ["x"]}, None)
    assert (second.variables, second.expect) == (None, None)  # a comment on its own line only
    assert (third.variables, third.expect) == (None, "NOT_FOUND")  # prose between: not its json
    assert empty_lists({"a": [{"b": []}, {"c": None}]}) == ["data.a[0].b"]


def test_the_readme_shows_variables_and_a_search_argument_variable() -> None:
    found = examples(README.read_text())
    assert len(found) >= 8
    with_variables = [e for e in found if e.variables]
    assert with_variables
    assert any("[String!]" in e.query for e in with_variables)


async def test_every_graphql_block_of_the_readme_runs_as_written() -> None:
    found = examples(README.read_text())
    failures = []
    app = create_app(Settings(allowed_hosts=("test",)))
    async with app.router.lifespan_context(app):  # seeds the embedded store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for example in found:
                where = f"README.md line {example.line}"
                if example.subscription:
                    errors = validate(schema._schema, parse(example.query))
                    failures += [f"{where}: {e.message}" for e in errors]
                    continue
                response = await http.post(
                    "/graphql", json={"query": example.query, "variables": example.variables or {}}
                )
                body = response.json()
                codes = [e.get("extensions", {}).get("code") for e in body.get("errors", ())]
                if example.expect is not None:
                    if codes != [example.expect]:
                        failures.append(f"{where}: expected {example.expect}, got {body}")
                elif codes:
                    failures.append(f"{where}: {body['errors']}")
                elif not all((body.get("data") or {}).values()) or empty_lists(body["data"]):
                    failures.append(
                        f"{where}: shows nothing: {body.get('data')}"
                        f" (empty: {empty_lists(body.get('data'))})"
                    )
    assert failures == []
