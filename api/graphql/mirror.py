"""How the write inputs mirror the output types, and how their values reach the resolvers.

The input classes themselves are generated (api/graphql/inputs.py, by
scripts/generate_inputs.py, `make inputs`), so a type checker and "go to definition" follow
them; a test fails when they drift from the output types. This module is what the generated
declarations use: `mirrored` gives each input its GraphQL name and the descriptions of the
output type it mirrors, and checks, at import, that it declares exactly that type's fields.

Every input field is nullable: required elements are checked by the FHIR rules instead, which
report all missing elements of a write at once, each by its FHIRPath, rather than stopping at
the first.

Resolvers receive these inputs as FHIR JSON dicts, never as Strawberry input objects: a
50,000-instance study is a million values, and building an object for each of them, only to
turn it back into JSON for the rules, cost seconds of the event loop. So graphql-core's own
coercion, which has already checked every value against the input type, leaves out the nulls
of each input object as it builds it (`without_nulls`, installed by `fhir_json_inputs`), and
Strawberry hands the result on as it is (`from_input`). The schema is unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLInputObjectType, GraphQLSchema
from strawberry.types.base import get_object_definition

# Output-only fields, computed views that have no place in a write: left out of the inputs.
SKIP = {"Extension": {"value"}, "Reference": {"resource"}}
MIRRORED: list[str] = []  # the GraphQL names of the input types declared with `mirrored`

T = TypeVar("T")


def input_name(output: type) -> str:
    """The GraphQL name of the input mirroring `output` (`Coding` -> `CodingInput`)."""
    return get_object_definition(output, strict=True).name + "Input"


def mirrored(output: type) -> Callable[[type[T]], type[T]]:
    """Declares the decorated class as the input type mirroring output type `output`: its
    GraphQL name, its description and each field's are `output`'s, every field defaults to
    null, and its values reach resolvers as FHIR JSON (see the module docstring)."""
    definition = get_object_definition(output, strict=True)
    fields = {f.python_name: f for f in definition.fields}
    expected = set(fields) - SKIP.get(definition.name, set())

    def declare(cls: type[T]) -> type[T]:
        declared = set(cls.__annotations__)
        if declared != expected:  # the generated file is stale: fail at import, not in use
            raise TypeError(
                f"{cls.__name__} does not mirror {definition.name}: run `make inputs` "
                f"(missing {sorted(expected - declared)}, extra {sorted(declared - expected)})"
            )
        for name in cls.__annotations__:
            setattr(cls, name, strawberry.field(description=fields[name].description, default=None))
        made = strawberry.input(cls, name=input_name(output), description=definition.description)
        # Strawberry passes the value of an input of this type, coerced by graphql-core, to this
        # hook instead of building an object: the value is already FHIR JSON (fhir_json_inputs).
        get_object_definition(made, strict=True).from_input = _as_coerced
        MIRRORED.append(input_name(output))
        return made

    return declare


def _as_coerced(cls: type, value: Any, context: Any) -> Any:
    return value


def without_nulls(value: dict[str, Any]) -> dict[str, Any]:
    """An input object as FHIR JSON: graphql-core has set every field the caller left out to
    its published default, null; FHIR JSON has no nulls, so these and explicit nulls go."""
    return {name: item for name, item in value.items() if item is not None}


def fhir_json_inputs(schema: GraphQLSchema) -> None:
    """Makes graphql-core coerce the values of the mirrored input types to FHIR JSON."""
    for name in MIRRORED:
        input_type = schema.type_map[name]
        assert isinstance(input_type, GraphQLInputObjectType)  # `mirrored` made it an input
        # graphql-core takes out_type as a constructor argument and stores it the same way,
        # but declares the default as a method, so its own assignment is unchecked too.
        input_type.out_type = without_nulls  # type: ignore[method-assign]
