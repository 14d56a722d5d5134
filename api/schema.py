"""Builds the strawberry.Schema: FHIR names as written (no camel-casing), dict-aware field
resolution over the stored FHIR JSON, and the contract error mapper."""

from __future__ import annotations

from typing import Any

import strawberry
import strawberry.tools
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from api.errors import ErrorMapper, log
from api.mutations import ImportMutation, Mutation
from api.queries import Query


def read_element(source: Any, name: str) -> Any:
    """Default resolver: the FHIR JSON element of a dict, or an attribute of an object."""
    if type(source) is dict:
        return source.get(name)
    return getattr(source, name, None)


class ImagingSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        # Client errors are answers, not incidents; the mapper logs unexpected ones itself.
        for error in errors:
            if error.original_error is not None and not hasattr(error.original_error, "code"):
                log.debug("resolver error at %s", error.path)


def build_schema() -> strawberry.Schema:
    return ImagingSchema(
        query=Query,
        mutation=strawberry.tools.merge_types("Mutation", (Mutation, ImportMutation)),
        config=StrawberryConfig(auto_camel_case=False, default_resolver=read_element),
        extensions=[ErrorMapper],
    )


schema = build_schema()
