"""The benchmark scenarios: their data, queries, and the executors measured on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import build_schema as build_sdl
from graphql import graphql

from api.graphql.context import Context
from api.graphql.schema import build_schema
from api.settings import Settings
from bench import naive

SERIES_ALL = """uid number modality { coding { system code display } text } description
  numberOfInstances endpoint { reference display } bodySite { concept { coding { system code
  display } text } reference { reference display } } laterality { coding { system code display
  } text } started performer { function { coding { system code display } } actor { reference
  display } }"""
INSTANCE_ALL = "uid sopClass { system code display } number title"
QUERIES = {
    "A": f"""query($id: ID!) {{ ImagingStudy(id: $id) {{ id status started description
  numberOfSeries numberOfInstances subject {{ reference display }} series {{ {SERIES_ALL}
  instance {{ {INSTANCE_ALL} }} }} }} }}""",
    "B": """query($id: ID!) { ImagingStudy(id: $id) { series { uid number modality { coding {
  code } } instance { uid number sopClass { code } } } } }""",
    "C": """query($m: [String!], $d: [String!]) { ImagingStudyList(modality: $m, started: $d,
  _count: 50) { id status started description numberOfSeries numberOfInstances
  subject { reference } modality { coding { code } } } }""",
    "D": """query($id: ID!) { ImagingStudy(id: $id) { series { uid numberOfInstances
  instance(_count: 500, _offset: 2000) { uid number sopClass { code } } } } }""",
}


@dataclass
class Stub:
    """A store that hands out documents already in memory: executors measured without I/O."""

    doc: dict[str, Any] | None = None
    docs: list[dict[str, Any]] | None = None

    async def get(self, *_: Any, **__: Any) -> Any:
        return self.doc

    async def search(self, *_: Any, **__: Any) -> Any:
        return self.docs


class Ours:
    def __init__(self, compiled: bool = True) -> None:
        self.schema = build_schema(Settings(), compiled=compiled)

    async def run(self, query: str, variables: dict[str, Any], repo: Any) -> Any:
        context = Context(_repo=repo, settings=Settings())
        result = await self.schema.execute(query, variables, context_value=context)
        assert not result.errors, result.errors
        return result.data


class Generic:
    """Plain graphql-core over the same dicts: our SDL, a dict-reading default resolver."""

    def __init__(self) -> None:
        sdl = build_schema().as_str()
        self.schema = build_sdl(sdl)
        self.doc: Any = None
        self.docs: Any = None
        query = self.schema.query_type
        assert query is not None
        query.fields["ImagingStudy"].resolve = self._one
        query.fields["ImagingStudyList"].resolve = self._many
        series = self.schema.type_map["ImagingStudySeries"]
        series.fields["instance"].resolve = _page  # type: ignore[attr-defined]

    async def _one(self, *_: Any, **__: Any) -> Any:
        return self.doc

    async def _many(self, *_: Any, **__: Any) -> Any:
        return self.docs

    async def run(
        self, query: str, variables: dict[str, Any], doc: Any = None, docs: Any = None
    ) -> Any:
        self.doc, self.docs = doc, docs
        result = await graphql(self.schema, query, variable_values=variables, field_resolver=_read)
        assert not result.errors, result.errors
        return result.data


def _read(source: Any, info: Any, **_: Any) -> Any:
    return source.get(info.field_name) if isinstance(source, dict) else None


def _page(
    source: Any, _info: Any, _count: int | None = None, _offset: int | None = None, **_: Any
) -> Any:
    start = _offset or 0
    items = source.get("instance") or []
    return items[start : None if _count is None else start + _count]


class Naive:
    def __init__(self) -> None:
        self.doc: Any = None
        self.docs: Any = None
        self.schema = naive.schema(self._one, self._many)

    async def _one(self, _: str) -> Any:
        return self.doc

    async def _many(self, *_: Any) -> Any:
        return self.docs

    async def run(
        self, query: str, variables: dict[str, Any], doc: Any = None, docs: Any = None
    ) -> Any:
        self.doc, self.docs = doc, docs
        result = await self.schema.execute(query, variables)
        assert not result.errors, result.errors
        return result.data
