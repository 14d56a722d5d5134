"""The compiled execution engine and plain graphql-core side by side: one query over the same
studies through both, asserting byte-identical responses (tests/api/graphql/test_execution.py
generates the queries; other tests run their own through it)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from api.graphql.context import Context
from api.graphql.schema import build_schema
from api.settings import Settings
from store.mongo import pages

# Limits out of the way: the execution of generated queries is what is compared.
_UNLIMITED = Settings(max_depth=1000, max_aliases=10**6, max_tokens=10**6, max_cost=10**12)
COMPILED = build_schema(_UNLIMITED)
REFERENCE = build_schema(_UNLIMITED, compiled=False)
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class _Repo:
    """Serves generated documents as the store would (the projection is ignored)."""

    def __init__(self, studies: list[dict[str, Any]]) -> None:
        self.studies = studies

    async def get(
        self, study_id: str, fields: Any = None, subject: Any = None, instances: Any = None
    ) -> Any:
        if not self.studies:
            return None
        study = copy.deepcopy(self.studies[0])
        # Only the page of each series' instances when asked, as the store sends it.
        return study if instances is None else pages.page_of(study, *instances)

    async def search(self, *_: Any, **__: Any) -> list[Any]:
        return copy.deepcopy(self.studies)

    async def count(self, *_: Any, **__: Any) -> int:
        return len(self.studies)


def normalised(result: Any) -> str:
    """A result as JSON text, request ids masked: equal text means an equal response."""
    errors = [
        {
            "message": _REQUEST_ID.sub("<id>", e.message),
            "path": e.path,
            "locations": [(loc.line, loc.column) for loc in e.locations or ()],
            "code": (e.extensions or {}).get("code"),
        }
        for e in result.errors or ()
    ]
    return json.dumps({"data": result.data, "errors": errors}, sort_keys=False)


async def both(query: str, docs: list[dict[str, Any]], yes: bool, n: int | None) -> Any:
    """Runs `query` (variables `$yes`, `$n`) over `docs` on both engines, asserts they agree
    and returns the compiled engine's result."""
    variables = {"yes": yes, "n": n}
    outputs, results = [], []
    for schema in (COMPILED, REFERENCE):
        context = Context(_repo=_Repo(docs), settings=Settings())  # type: ignore[arg-type]
        results.append(await schema.execute(query, variables, context_value=context))
        outputs.append(normalised(results[-1]))
    assert outputs[0] == outputs[1], query
    return results[0]
