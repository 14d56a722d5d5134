"""The import and export commands, over both routes: straight to the store and through a
server's GraphQL API. Both must give the same results."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli import commands as cli
from api.transfer.stream import run_export, run_import
from api.transfer.targets import LocalTarget, RemoteError, RemoteTarget
from store.interop import demo, dicom
from store.interop.ingest import Ingest
from store.mongo import client
from store.mongo.repository import Repository
from tests.support.dicom import write


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in demo.EXAMPLES:
        (tmp_path / name).write_text(json.dumps(demo.example(name)))
    lines = [json.dumps(demo.study(f"n{n:03d}", 1, 2)) for n in range(250)]
    lines[10] = json.dumps({**demo.study("bad", 1, 1), "status": "bogus"})
    lines[20] = "{not json"
    lines[30] = json.dumps({"resourceType": "Patient", "id": "p"})
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "many.ndjson").write_text("\n".join(lines) + "\n")
    (tmp_path / "notes.txt").write_text("ignored: not .json or .ndjson")
    return tmp_path


@pytest.fixture
async def other_store() -> AsyncIterator[Repository]:
    handle, db = client.open_embedded("other")
    yield Repository(db)
    client.close(handle)


@pytest.fixture
def remote(http: httpx.AsyncClient) -> RemoteTarget:
    return RemoteTarget("http://test/graphql", client=http)


@pytest.mark.slow
async def test_both_routes_give_the_same_results(
    folder: Path, remote: RemoteTarget, other_store: Repository
) -> None:
    errors = io.StringIO()
    over_http = await run_import(remote, [str(folder)], out=errors)
    direct = await run_import(LocalTarget(other_store), [str(folder)], out=errors)
    assert over_http.counts == direct.counts
    assert over_http.problems == direct.problems
    assert dict(direct.counts) == {"created": 249, "rejected": 2, "unreadable": 1}
    assert not direct.ok
    sources = [source for source, _ in direct.problems]
    assert any(s.endswith("many.ndjson:11") for s in sources)  # the bad status, by line
    assert any(s.endswith("many.ndjson:21") for s in sources)  # not JSON
    again = await run_import(LocalTarget(other_store), [str(folder)], out=errors)
    assert again.counts["unchanged"] == 249
    assert again.counts["created"] == 0


async def test_dry_run_writes_nothing(folder: Path, other_store: Repository) -> None:
    report = await run_import(
        LocalTarget(other_store), [str(folder)], dry_run=True, out=io.StringIO()
    )
    assert report.counts["created"] == 249
    assert await other_store.count([]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ndjson", "bundle"])
async def test_export_over_both_routes_is_identical(
    folder: Path, remote: RemoteTarget, store: Repository, fmt: str
) -> None:
    await run_import(LocalTarget(store), [str(folder)], out=io.StringIO())
    direct, over_http = io.StringIO(), io.StringIO()
    params = [("modality", "CT"), ("started", "ge2000")]
    count = await run_export(LocalTarget(store), params, fmt, direct)
    assert await run_export(remote, params, fmt, over_http) == count == 248
    assert direct.getvalue() == over_http.getvalue()


@pytest.mark.slow
async def test_a_remote_export_keeps_the_cli_search_rules(
    folder: Path, remote: RemoteTarget, store: Repository
) -> None:
    """The CLI's options are REST strings (a comma is OR, a repeated option AND); GraphQL's
    lists are OR with literal commas, so the remote route must translate, not pass through."""
    await run_import(LocalTarget(store), [str(folder)], out=io.StringIO())
    for params in (
        [("modality", "CT,DX")],
        [("started", "ge2000"), ("started", "lt2011")],
        [("modality", "CT"), ("modality", "DX")],
        [("_id", "example,example-xr"), ("modality", "DX,MR")],
    ):
        direct, over_http = io.StringIO(), io.StringIO()
        count = await run_export(LocalTarget(store), params, "ndjson", direct)
        assert await run_export(remote, params, "ndjson", over_http) == count, params
        assert direct.getvalue() == over_http.getvalue()
    assert await LocalTarget(store).count([("modality", "CT,DX")]) == 249
    assert (
        await LocalTarget(store).count([("_id", "example,example-xr"), ("modality", "DX,MR")]) == 1
    )


def test_cli_exit_status_and_summary(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, db = client.open_embedded("cli")  # sync test: the CLI runs its own event loop
    store = Repository(db)

    @asynccontextmanager
    async def here(*_: Any) -> AsyncIterator[LocalTarget]:
        yield LocalTarget(store)

    monkeypatch.setattr(cli, "target", here)
    assert cli.main(["import", str(folder / "ImagingStudy-example.json")]) == 0
    assert "created" in capsys.readouterr().out
    assert cli.main(["import", str(folder)]) == 1
    out = folder / "out.ndjson"
    assert cli.main(["export", "--out", str(out), "--patient", "dicom"]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["id"] for s in exported} == {"example", "example-xr"}


def test_cli_export_by_patient_identifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, db = client.open_embedded("cli-mrn")  # sync test: the CLI runs its own event loop
    store = Repository(db)

    @asynccontextmanager
    async def here(*_: Any) -> AsyncIterator[LocalTarget]:
        yield LocalTarget(store)

    monkeypatch.setattr(cli, "target", here)
    for name, mrn in (("m1", "M1"), ("m2", "M2")):
        study = demo.study(name, 1, 1)
        study["subject"]["identifier"] = {"system": "urn:mrn", "value": mrn}
        (tmp_path / f"{name}.json").write_text(json.dumps(study))
    assert cli.main(["import", str(tmp_path)]) == 0
    out = tmp_path / "out.ndjson"
    assert cli.main(["export", "--out", str(out), "--patient-identifier", "urn:mrn|M2"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["m2"]


async def test_a_remote_export_refuses_a_repeated_identifier_option(
    remote: RemoteTarget,
) -> None:
    """A repeated option is AND, which over GraphQL takes _filter, which has no modifiers:
    said plainly instead of the server's _filter error."""
    params = [("patient:identifier", "M1"), ("patient:identifier", "M2")]
    with pytest.raises(RemoteError, match="--patient-identifier may be given once"):
        await run_export(remote, params, "ndjson", io.StringIO())
    assert await run_export(remote, [("patient:identifier", "M1,M2")], "ndjson", io.StringIO()) == 0


def test_cli_without_a_server_says_so(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    code = cli.main(["import", "--url", "http://127.0.0.1:9/graphql", str(folder)])
    assert code == 2
    assert "make serve" in capsys.readouterr().err


async def test_dicom_ingest_over_both_routes(
    remote: RemoteTarget, store: Repository, other_store: Repository
) -> None:
    folder = dicom.test_files()
    over_http = await Ingest(remote).run([folder])
    direct = await Ingest(LocalTarget(other_store)).run([folder])
    assert over_http == direct
    trees = []
    for repo in (store, other_store):
        trees.append(
            sorted(
                (s["identifier"][0]["value"], s["id"], s["numberOfInstances"])
                for s in await repo.search([], 1000)
            )
        )
    assert trees[0] == trees[1]
    # Either route calls each study by its Study Instance UID.
    assert all(uid == f"urn:oid:{study_id}" for uid, study_id, _ in trees[0])
    again = await Ingest(remote).run([folder])
    assert (again.studies_created, again.studies_updated, again.instances_added) == (0, 0, 0)


async def test_a_remote_ingest_leaves_a_taken_id_to_its_study(
    remote: RemoteTarget, store: Repository, tmp_path: Path
) -> None:
    """The server refuses the UID as an id another study has; ingest then lets it choose."""
    await store.create(demo.study("1.2.3", 1, 1))
    write(tmp_path, "a.dcm")
    report = await Ingest(remote).run([tmp_path])
    assert report.failed == []
    [(uid, study_id)] = report.random_ids
    assert uid == "1.2.3"
    ingested = await store.get(study_id)
    assert ingested is not None
    assert ingested["identifier"][0]["value"] == "urn:oid:1.2.3"


def test_cli_ingest_dicom(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, db = client.open_embedded("cli-dicom")
    store = Repository(db)

    @asynccontextmanager
    async def here(*_: Any) -> AsyncIterator[LocalTarget]:
        yield LocalTarget(store)

    monkeypatch.setattr(cli, "target", here)
    assert cli.main(["ingest-dicom", "--timezone", "+0200", str(dicom.test_files())]) == 0
    out = capsys.readouterr().out
    assert "studies created" in out
    assert "not a DICOM file" in out
    assert cli.main(["ingest-dicom", "--timezone", "noon", "x"]) == 2


async def test_the_cli_sends_imaging_token_to_a_server_with_auth_on(store: Repository) -> None:
    from api.http.app import create_app
    from api.settings import Settings
    from api.transfer.targets import RemoteError
    from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token

    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    await store.create(demo.study("s1", 1, 1))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, store)), base_url="http://test"
    ) as http:
        with pytest.raises(RemoteError) as refused:
            await RemoteTarget("http://test/graphql", client=http).count({})
        assert "set IMAGING_TOKEN" in str(refused.value)  # what to do about it
        allowed = RemoteTarget("http://test/graphql", client=http, token=token("system/*.*"))
        assert await allowed.count({}) == 1


async def test_a_url_without_the_graphql_path_says_so(http: httpx.AsyncClient) -> None:
    from api.transfer.targets import RemoteError

    with pytest.raises(RemoteError) as refused:
        await RemoteTarget("http://test/", client=http).count({})
    assert "--url http://test/graphql" in str(refused.value)
