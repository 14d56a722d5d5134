"""A document with several operations must say which to run (GraphQL spec, GetOperation):
Strawberry would otherwise run the first one, which is not what the caller may have meant."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension


class OperationChoice(SchemaExtension):
    """Refuses, before anything runs, a document of several operations without operationName.
    Runs after QueryLimits, which sets the validation errors this adds to."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        # Strawberry fills a missing operationName in from the first operation; only its
        # private field tells whether the caller gave one.
        if document is not None and getattr(context, "_provided_operation_name", None) is None:
            count = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
            if count > 1:
                error = GraphQLError(
                    f"the document holds {count} operations: operationName must name the one to run"
                )
                context.pre_execution_errors = [*(context.pre_execution_errors or ()), error]
        yield
