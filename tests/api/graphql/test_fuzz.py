"""schemathesis (GraphQL mode) against the app in process, every query and mutation: no
response may be a server error, carry INTERNAL_SERVER_ERROR, or break the response shape.
The budget per operation comes from IMAGING_FUZZ_EXAMPLES: small in `make test` (CI), 1,000
in `make fuzz`."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import graphql
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo import client
from store.mongo.repository import Repository

EXAMPLES = int(os.environ.get("IMAGING_FUZZ_EXAMPLES", "15"))
CLIENT_CODES = {
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "VERSION_CONFLICT",
    "INVALID_STATUS_TRANSITION",
    "QUERY_REJECTED",
}


def _json_nodes() -> st.SearchStrategy[Any]:
    """GraphQL literals for the JSON scalar, FHIR-ish and hostile keys alike."""
    names = st.sampled_from(
        [
            "resourceType",
            "id",
            "status",
            "subject",
            "series",
            "entry",
            "type",
            "resource",
            "$where",
            "a.b",
            "_x",
        ]
    )
    leaves = st.one_of(
        st.text(max_size=20).map(lambda s: graphql.StringValueNode(value=s)),
        st.integers(-10, 10).map(lambda i: graphql.IntValueNode(value=str(i))),
        st.booleans().map(lambda b: graphql.BooleanValueNode(value=b)),
        st.sampled_from(["ImagingStudy", "Bundle", "transaction", "batch", "available"]).map(
            lambda s: graphql.StringValueNode(value=s)
        ),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda v: graphql.ListValueNode(values=tuple(v))),
            st.lists(st.tuples(names, inner), max_size=4).map(
                lambda kv: graphql.ObjectValueNode(
                    fields=tuple(
                        graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v)
                        for k, v in kv
                    )
                )
            ),
        ),
        max_leaves=8,
    )


schemathesis.graphql.scalar("JSON", _json_nodes())
_, _db = client.open_embedded("fuzz")
STORE = Repository(_db)
for _id in ("0", "x", ""):  # ids the fuzzer tends to try, so writes meet real studies too
    if _id:
        asyncio.run(
            STORE.create(
                {**demo.study(_id, 1, 1), "identifier": [{"system": "urn:x", "value": _id}]}
            )
        )
APP = create_app(Settings(seed=False, allowed_hosts=("testserver",)), STORE)  # its client's host
schema = schemathesis.graphql.from_asgi("/graphql", APP)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_well_formed_answers(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, response.text[:500]
    if response.status_code != 200:
        assert response.status_code in (400, 405, 413), response.status_code
        return
    body = response.json()
    assert set(body) <= {"data", "errors", "extensions"}, body
    assert body.get("data") is None or isinstance(body["data"], dict)
    for error in body.get("errors") or ():
        assert error["extensions"]["code"] in CLIENT_CODES, error
        assert error["extensions"]["resource"]["resourceType"] == "OperationOutcome"
