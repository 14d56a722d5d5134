"""Builds the strawberry.Schema: FHIR names as written (no camel-casing), dict-aware field
resolution over the stored FHIR JSON, the query limits and the contract error mapper."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import strawberry
import strawberry.tools
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from api.errors import ErrorMapper, log
from api.graphql import directives
from api.graphql.budget import ResultBudget
from api.graphql.directives import Reshape
from api.graphql.documents import query_limits
from api.graphql.execution import CompiledExecutionContext, FinishingExecutionContext
from api.graphql.fhirpath_ahead import FhirPathAhead
from api.graphql.hooks import HooksRunner
from api.graphql.limits import Limits
from api.graphql.mirror import fhir_json_inputs
from api.graphql.operation_choice import OperationChoice
from api.graphql.resolvers.mutations import ImportMutation, Mutation
from api.graphql.resolvers.queries import Query
from api.graphql.resolvers.subscriptions import Subscription
from api.graphql.types.imaging_study import (
    ImagingStudy,
    ImagingStudySeries,
    ImagingStudySeriesInstance,
)
from api.settings import Settings


def read_element(source: Any, name: str) -> Any:
    """Default resolver: the FHIR JSON element of a dict, or an attribute of an object."""
    if type(source) is dict:
        return source.get(name)
    if isinstance(source, dict):  # a resolved reference, marked for its union's type
        return source.get(name)
    return getattr(source, name, None)


class ImagingSchema(strawberry.Schema):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fhir_json_inputs(self._schema)  # write inputs reach the resolvers as FHIR JSON
        directives.declare(self._schema)  # @flatten, @first, @singleton, @slice

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        # The hooks of each extension class found once, not per operation and phase.
        return HooksRunner(execution_context=execution_context, extensions=extensions)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client errors are answers, not incidents; the mapper logs unexpected ones itself.
        for error in errors:
            if error.original_error is not None and not hasattr(error.original_error, "code"):
                log.debug("resolver error at %s", error.path)


def _width(type_: Any) -> int:
    # A primitive's `_name` field (its id and extensions) is part of the same FHIR element,
    # priced once with it, as its extensions are elsewhere (the budget counts what is read).
    return sum(not f.name.startswith("_") for f in type_.__strawberry_definition__.fields)


def whole_study(settings: Settings) -> int:
    """The cost of one fhirJson: it returns the whole study, so it is priced as selecting
    every element of the largest study the store accepts (each element once per series and
    per instance at the caps)."""
    return (
        _width(ImagingStudy)
        + settings.max_series * _width(ImagingStudySeries)
        + settings.max_instances * _width(ImagingStudySeriesInstance)
    )


def limits(settings: Settings) -> Limits:
    return Limits(
        max_tokens=settings.max_tokens,
        max_depth=settings.max_depth,
        max_aliases=settings.max_aliases,
        max_cost=settings.max_cost,
        max_length=settings.max_query_length,
        max_series=settings.max_series,
        max_instances=settings.max_instances,
        max_list=settings.list_max_count,
        whole_study=whole_study(settings),
        introspection=not settings.production,
    )


def build_schema(
    settings: Settings | None = None,
    extra: Sequence[Callable[[], SchemaExtension]] = (),
    compiled: bool | None = None,
) -> strawberry.Schema:
    """The schema for `settings`; `extra` extensions (audit, metrics) run around the rest, so
    they see every operation's final, mapped errors. `compiled=False` executes with plain
    graphql-core (the reference the compiled path is tested and measured against)."""
    settings = settings or Settings()
    compiled = settings.compiled if compiled is None else compiled
    return ImagingSchema(
        query=Query,
        mutation=strawberry.tools.merge_types("Mutation", (Mutation, ImportMutation)),
        subscription=Subscription,
        config=StrawberryConfig(auto_camel_case=False, default_resolver=read_element),
        # Factories, not instances: every operation gets its own extension objects.
        extensions=[
            *extra,
            query_limits(limits(settings)),
            OperationChoice,
            FhirPathAhead,
            functools.partial(
                ResultBudget,
                settings.max_result_values,
                settings.max_store_seconds,
                settings.max_reference_reads,
            ),
            ErrorMapper,
            Reshape,
        ],
        execution_context_class=(
            CompiledExecutionContext if compiled else FinishingExecutionContext
        ),
    )


schema = build_schema()
