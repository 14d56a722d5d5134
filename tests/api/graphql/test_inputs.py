"""The write input types are declared in a generated, checked-in module (api/graphql/inputs.py)
that a type checker and "go to definition" follow, and that cannot drift from the output types
it mirrors."""

from __future__ import annotations

import inspect
import runpy
from pathlib import Path

import pytest
from graphql import GraphQLInputObjectType
from strawberry.types.base import get_object_definition

from api.graphql import inputs
from api.graphql.mirror import MIRRORED, mirrored
from api.graphql.schema import schema
from api.graphql.types.datatypes import Coding

ROOT = Path(__file__).resolve().parents[3]


def test_the_generated_inputs_are_what_the_generator_makes() -> None:
    source = runpy.run_path(str(ROOT / "scripts" / "generate_inputs.py"))["source"]
    assert (ROOT / "api" / "graphql" / "inputs.py").read_text() == source(), (
        "api/graphql/inputs.py is stale: run `make inputs`"
    )


def test_every_input_type_is_a_class_statement_of_the_inputs_module() -> None:
    in_schema = {
        name for name, t in schema._schema.type_map.items() if isinstance(t, GraphQLInputObjectType)
    }
    assert set(MIRRORED) == in_schema
    for name in MIRRORED:
        cls = getattr(inputs, name)
        assert cls.__module__ == "api.graphql.inputs"
        assert f"\nclass {name}:\n" in inspect.getsource(cls), name  # not made by type()
        assert get_object_definition(cls, strict=True).name == name


def test_an_input_that_no_longer_mirrors_its_output_type_fails_at_import() -> None:
    class CodingInput:  # Coding's fields, one missing and one that Coding does not have
        id: str | None = None
        extension: list[object] | None = None
        system: str | None = None
        version: str | None = None
        code: str | None = None
        display: str | None = None
        userSelected: bool | None = None
        _system: object | None = None
        _version: object | None = None
        _code: object | None = None
        _display: object | None = None
        colour: str | None = None

    with pytest.raises(TypeError, match=r"missing \['_userSelected'\], extra \['colour'\]"):
        mirrored(Coding)(CodingInput)
