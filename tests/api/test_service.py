"""The service as a newcomer meets it: the checked-in schema, descriptions in GraphiQL, the
seeded embedded store, settings from the environment and the CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from graphql import GraphQLInputObjectType, GraphQLObjectType

from api.cli.commands import main
from api.graphql.schema import schema
from api.http.app import create_app
from api.settings import Settings
from tests.support.graphql import Gql

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_schema_matches_the_code() -> None:
    assert (ROOT / "schema.graphql").read_text() == schema.as_str() + "\n", (
        "schema.graphql is stale: run `make schema`"
    )


def test_cli_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == (ROOT / "schema.graphql").read_text()


def test_every_type_and_field_is_described() -> None:
    missing = []
    for name, gql_type in schema._schema.type_map.items():
        if name.startswith("__") or not isinstance(
            gql_type, GraphQLObjectType | GraphQLInputObjectType
        ):
            continue
        if name not in ("Query", "Mutation", "Subscription") and not gql_type.description:
            missing.append(name)
        missing += [f"{name}.{f}" for f, field in gql_type.fields.items() if not field.description]
    assert missing == []


def test_study_fields_carry_the_r5_definitions() -> None:
    study = schema._schema.type_map["ImagingStudy"]
    assert isinstance(study, GraphQLObjectType)
    assert study.fields["series"].description.startswith("Each study has one or more series")
    assert "DICOM" in (study.description or "")


async def test_embedded_store_is_seeded_with_the_demo_studies() -> None:
    app = create_app(Settings(allowed_hosts=("t",)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            body = (
                await http.post(
                    "/graphql",
                    json={"query": "{ ImagingStudyList(_count: 100) { id numberOfInstances } }"},
                )
            ).json()
            page = await http.get("/graphql", headers={"accept": "text/html"})
    studies = {s["id"]: s["numberOfInstances"] for s in body["data"]["ImagingStudyList"]}
    assert {"demo-ct": 600, "example": 1, "example-xr": 2}.items() <= studies.items()
    assert len(studies) > 20  # and the studies in pydicom's test files
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


async def test_no_seed_starts_empty() -> None:
    app = create_app(Settings(seed=False))
    async with app.router.lifespan_context(app):
        assert await app.state.repo.search([], 10) == []


def test_settings_from_env() -> None:
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env(
        {
            "MONGODB_URI": "mongodb://db:27017/?replicaSet=rs0",
            "IMAGING_SEED": "0",
            "IMAGING_MAX_INSTANCES": "100",
        }
    )
    assert settings.mongodb_uri == "mongodb://db:27017/?replicaSet=rs0"
    assert settings.mongodb_db == "imaging"
    assert not settings.embedded
    assert not settings.seed
    assert settings.max_instances == 100


async def test_serve_imports_files_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "xr.json").write_text(
        (ROOT / "store/interop/demo/ImagingStudy-example-xr.json").read_text()
    )
    app = create_app(Settings(seed=False, preload=(str(tmp_path),)))
    async with app.router.lifespan_context(app):
        assert [s["id"] for s in await app.state.repo.search([], 10)] == ["example-xr"]


async def test_serve_ingests_dicom_at_start_up() -> None:
    from store.interop.dicom import test_files

    app = create_app(Settings(seed=False, preload_dicom=(str(test_files() / "CT_small.dcm"),)))
    async with app.router.lifespan_context(app):
        [study] = await app.state.repo.search([], 10)
        assert study["series"][0]["modality"]["coding"][0]["code"] == "CT"


async def test_import_mutation_reports_each_entry(gql: Gql) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}],
    }
    body = await gql(
        """mutation($r: JSON!) { ImagingStudyImport(resource: $r, dryRun: true)
        { index status id outcome } }""",
        r=bundle,
    )
    [result] = body["data"]["ImagingStudyImport"]
    assert (result["index"], result["status"], result["id"]) == (0, "rejected", None)
    assert "only ImagingStudy" in result["outcome"]["issue"][0]["diagnostics"]
    body = await gql('mutation { ImagingStudyImport(resource: "text") { status } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_readme_lists_every_environment_variable() -> None:
    from api.settings import ENVIRONMENT

    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1]
    assert [v for v in ENVIRONMENT if f"`{v}`" not in table] == []
    settings = Settings.from_env(
        {
            "IMAGING_CORS_ORIGINS": "https://a.example, https://b",
            "IMAGING_ENV": "production",
            "MONGODB_RETRY_WRITES": "0",
            "IMAGING_CURSOR_SECRET": "s3cret",
        }
    )
    assert settings.cors_origins == ("https://a.example", "https://b")
    assert settings.production
    assert not settings.mongodb_retry_writes
