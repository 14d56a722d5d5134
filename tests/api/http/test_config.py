"""Configuration and HTTP that fail closed: settings parsed strictly, the Host allow-list, a
sane request id, the access log without query strings, read timeouts and a connection cap
(on a real uvicorn server on 127.0.0.1), one operation per document, clock-skew leeway."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from api.cli import commands as cli
from api.http.app import create_app
from api.http.logs import configure as configure_logs
from api.http.server import MAX_HEADER_BYTES, uvicorn_options
from api.settings import Settings, SettingsError
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, error
from tests.support.server import serving
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token

# Every wait on the real server is bounded: a test that would hang fails instead.
BOUND = 15


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("IMAGING_AUTH", "on", "off, jwt"),
        ("IMAGING_AUTH", "bearer", "off, jwt"),
        ("IMAGING_ENV", "prod", "development, production"),
        ("IMAGING_SEED", "fasle", "true, 1, yes, on, false, 0, no, off"),
        ("MONGODB_RETRY_WRITES", "2", "true, 1, yes, on, false, 0, no, off"),
        ("IMAGING_PORT", "eighty", "an integer from 1 to 65535"),
        ("IMAGING_PORT", "70000", "an integer from 1 to 65535"),
        ("IMAGING_MAX_DEPTH", "1_0", "an integer from 1 to 1000"),
        ("IMAGING_MAX_BODY_BYTES", "-1", "an integer from 1024"),
        ("IMAGING_JWT_LEEWAY_SECONDS", "1.5", "an integer from 0 to 600"),
        ("IMAGING_ALLOWED_HOSTS", "localhost:8000", "host names or IP addresses"),
    ],
)
def test_a_value_not_understood_refuses_to_start(variable: str, value: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value).startswith(f"{variable} must be")
    assert allowed in str(refused.value)


def test_known_values_are_read_in_any_case() -> None:
    settings = Settings.from_env(
        {
            "IMAGING_AUTH": "JWT",
            "IMAGING_JWT_SECRET": SECRET,
            "IMAGING_ENV": "Production",
            "IMAGING_CURSOR_SECRET": "x",
            "IMAGING_SEED": "No",
            "MONGODB_RETRY_WRITES": "OFF",
            "IMAGING_PORT": " 8080 ",
            "IMAGING_ALLOWED_HOSTS": "API.example, [::1]",
        }
    )
    assert (
        settings.auth,
        settings.env,
        settings.seed,
        settings.mongodb_retry_writes,
        settings.port,
    ) == ("jwt", "production", False, False, 8080)
    assert settings.allowed_hosts == ("api.example", "[::1]")
    assert Settings.from_env({"IMAGING_AUTH": "jwt ", "IMAGING_JWT_SECRET": SECRET}).auth == "jwt"


def test_settings_made_in_code_refuse_unknown_words_too() -> None:
    with pytest.raises(SettingsError, match=r"Settings\.auth must be one of off, jwt"):
        Settings(auth="JWT")


def test_production_refuses_the_built_in_cursor_secret() -> None:
    with pytest.raises(SettingsError, match="IMAGING_CURSOR_SECRET must be set"):
        Settings.from_env({"IMAGING_ENV": "production"})
    assert Settings.from_env(
        {"IMAGING_ENV": "production", "IMAGING_CURSOR_SECRET": "a secret of our own"}
    ).production


def test_jwt_without_a_key_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="IMAGING_AUTH=jwt needs IMAGING_JWT_SECRET"):
        Settings.from_env({"IMAGING_AUTH": "jwt"})


def test_serve_prints_the_refusal_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGING_PORT", "eighty")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "IMAGING_PORT must be an integer from 1 to 65535, not 'eighty'" in err
    assert "Traceback" not in err


# Host allow-list (DNS rebinding) -------------------------------------------------------------


async def _get(app: Any, host: str, path: str = "/healthz") -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as http:
        return await http.get(path, headers={"host": host})


async def test_auth_off_answers_only_the_allowed_host_names(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)  # the default: the loopback names
    for host in ("localhost", "LOCALHOST:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert (await _get(app, host)).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1:x", ""):
        refused = await _get(app, host, "/graphql?query={__typename}")
        assert refused.status_code == 400, host
        assert "IMAGING_ALLOWED_HOSTS" in refused.text


async def test_the_allow_list_is_configurable(store: Repository) -> None:
    app = create_app(Settings(seed=False, allowed_hosts=("api.example",)), store)
    assert (await _get(app, "api.example:443")).status_code == 200
    assert (await _get(app, "localhost")).status_code == 400
    anyone = create_app(Settings(seed=False, allowed_hosts=("*",)), store)
    assert (await _get(anyone, "evil.example")).status_code == 200


async def test_with_authentication_a_token_is_what_counts(store: Repository) -> None:
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    assert (await _get(create_app(settings, store), "api.example")).status_code == 200


async def test_a_websocket_from_another_host_is_refused(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address:
        host, port = address.split(":")
        answers = []
        for name in ("evil.example", address):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET /graphql HTTP/1.1\r\nHost: {name}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n".encode()
            )
            answers.append(await asyncio.wait_for(reader.readline(), BOUND))
            writer.close()
        assert answers[0].startswith(b"HTTP/1.1 403"), answers
        assert answers[1].startswith(b"HTTP/1.1 101"), answers


# Request id ---------------------------------------------------------------------------------


async def test_request_id_is_checked_not_trusted(http: httpx.AsyncClient) -> None:
    given = "trace:" + "x" * 100 + "/1.2 ok"  # printable ASCII, 113 characters
    echoed = await http.get("/healthz", headers={"x-request-id": given})
    assert echoed.headers["x-request-id"] == given
    for bad in (b"\xff\xfe", "é".encode(), b"a\x01b", b"y" * 129):
        response = await http.get("/healthz", headers={"x-request-id": bad})
        assert response.status_code == 200
        assert response.headers["x-request-id"] not in (bad.decode("latin-1"), "")
        assert len(response.headers["x-request-id"]) == 32  # a new one


# Access log ---------------------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """What the service's own logging set-up writes (to a buffer rather than standard error),
    undone afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logs()
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def test_access_log_leaves_out_query_strings(
    store: Repository, json_logs: io.StringIO
) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        query = '{ ImagingStudyList(patient: "Patient/secret-patient-7") { id } }'
        assert (await http.get("/graphql", params={"query": query})).status_code == 200
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any('"GET /graphql HTTP/1.1" 200' in message for message in access), access
    server = [line for line in lines if not line["logger"].startswith(("httpx", "httpcore"))]
    assert not [line for line in server if "secret-patient-7" in json.dumps(line)]


# Timeouts and limits on a real server ------------------------------------------------------


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.split(":")
    return await asyncio.open_connection(host, int(port))


@pytest.fixture
async def strict(store: Repository) -> AsyncIterator[str]:
    settings = Settings(
        seed=False, header_timeout_seconds=1, body_timeout_seconds=1, max_connections=4
    )
    async with serving(create_app(settings, store), **uvicorn_options(settings)) as address:
        yield address


async def test_slow_request_headers_are_cut_off(strict: str) -> None:
    silent = await _open(strict)
    trickling = await _open(strict)
    trickling[1].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for reader, writer in (silent, trickling):
        assert await asyncio.wait_for(reader.read(), BOUND) == b""  # closed by the server
        writer.close()


async def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too(strict: str) -> None:
    reader, writer = await _open(strict)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await asyncio.wait_for(reader.readexactly(length), BOUND)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # ...and the rest never comes
    assert await asyncio.wait_for(reader.read(), BOUND) == b""
    writer.close()


async def test_headers_sent_in_pieces_in_time_are_served(strict: str) -> None:
    reader, writer = await _open(strict)
    for piece in (b"GET /healthz HT", b"TP/1.1\r\nHost: 127.0", b".0.1\r\n\r\n"):
        writer.write(piece)
        await asyncio.sleep(0.05)
    assert (await asyncio.wait_for(reader.readline(), BOUND)).startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize("pieces", [1, 40])
async def test_request_headers_over_16_kib_are_refused(strict: str, pieces: int) -> None:
    """Sent at once or in pieces, a request head over MAX_HEADER_BYTES gets 400 and the
    connection closes: no request runs, and the server buffers no more of it."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * MAX_HEADER_BYTES
    reader, writer = await _open(strict)
    size = -(-len(head) // pieces)
    for start in range(0, len(head), size):
        writer.write(head[start : start + size])
        await writer.drain()
    writer.write(b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), BOUND)  # read() returns at the close
    assert answer.startswith(b"HTTP/1.1 400"), answer
    writer.close()


async def test_request_headers_just_under_the_cap_are_served(strict: str) -> None:
    reader, writer = await _open(strict)
    pad = b"a" * (MAX_HEADER_BYTES - 200)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + pad + b"\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), BOUND)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_trickled_body_gets_408_and_the_connection_closes(strict: str) -> None:
    reader, writer = await _open(strict)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"query"'
    )
    answer = await asyncio.wait_for(reader.read(), BOUND)  # read() returns at the close
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body not received within 1 s" in answer
    assert b'"code":"BAD_REQUEST"' in answer  # a GraphQL JSON body, which clients can show
    writer.close()


async def test_connections_beyond_the_cap_get_503(strict: str) -> None:
    idle = [await _open(strict) for _ in range(4)]
    reader, writer = await _open(strict)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), BOUND)).startswith(b"HTTP/1.1 503")
    for _, each in [*idle, (reader, writer)]:
        each.close()


# One operation per document -----------------------------------------------------------------


async def test_several_operations_need_an_operation_name(
    http: httpx.AsyncClient, store: Repository
) -> None:
    document = (
        "mutation Make($res: ImagingStudyInput!) { ImagingStudyCreate(res: $res) "
        "{ id } } query Count { ImagingStudyList { id } }"
    )
    variables = {"res": demo.study("s1", 1, 1)}
    body = (await http.post("/graphql", json={"query": document, "variables": variables})).json()
    assert body["data"] is None
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "operationName must name the one to run" in error(body)["message"]
    assert await store.search([], 10) == []  # the first operation did not run
    named = (
        await http.post(
            "/graphql", json={"query": document, "variables": {}, "operationName": "Count"}
        )
    ).json()
    assert named == {"data": {"ImagingStudyList": []}}
    get = await http.get(
        "/graphql", params={"query": "query A { __typename } query B { __typename }"}
    )
    assert error(get.json())["extensions"]["code"] == "BAD_USER_INPUT"
    made = (await http.post("/graphql", json={"query": CREATE, "variables": variables})).json()
    assert made["data"]["ImagingStudyCreate"]["id"] == "s1"  # one operation needs no name


# Clock skew ---------------------------------------------------------------------------------


async def _reads(store: Repository, bearer: str, **settings: Any) -> bool:
    app = create_app(
        Settings(
            seed=False,
            auth="jwt",
            jwt_secret=SECRET,
            jwt_audience=AUDIENCE,
            jwt_issuer=ISSUER,
            **settings,
        ),
        store,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        body = (
            await http.post(
                "/graphql",
                json={"query": "{ ImagingStudyList { id } }"},
                headers={"authorization": f"Bearer {bearer}"},
            )
        ).json()
    return "errors" not in body


async def test_a_small_clock_skew_is_tolerated(store: Repository) -> None:
    now = int(time.time())
    scope = "system/ImagingStudy.rs"
    just_expired = token(scope, exp=now - 10)
    early = token(scope, nbf=now + 10, iat=now + 10)
    assert await _reads(store, just_expired)  # within the default 30 s
    assert await _reads(store, early)
    assert not await _reads(store, token(scope, exp=now - 120))
    assert not await _reads(store, token(scope, nbf=now + 120))
    assert not await _reads(store, just_expired, jwt_leeway_seconds=0)
    assert not await _reads(store, early, jwt_leeway_seconds=0)


@pytest.mark.parametrize("variable", ["IMAGING_AUTH", "IMAGING_ENV", "IMAGING_JWT_SECRET"])
def test_an_empty_security_switch_refuses_to_start(variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: " "})


def test_a_key_with_authentication_off_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="IMAGING_AUTH is off"):
        Settings.from_env({"IMAGING_JWT_SECRET": "x" * 32})


def test_a_short_hs256_secret_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="32 bytes"):
        Settings.from_env({"IMAGING_AUTH": "jwt", "IMAGING_JWT_SECRET": "short"})
    assert (
        Settings.from_env({"IMAGING_AUTH": "jwt", "IMAGING_JWT_SECRET": "x" * 32}).jwt_secret
        == "x" * 32
    )


async def test_a_client_that_leaves_mid_body_is_not_an_incident(store: Repository) -> None:
    """It used to end in a 500 and a logged traceback, one per slow client that gave up."""
    app = create_app(Settings(seed=False), store)
    messages = iter(
        [
            {"type": "http.request", "body": b'{"query": "{ __ty', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")],
    }
    await app(scope, receive, send)  # raised ClientDisconnect: uvicorn logged a traceback
    assert [m for m in sent if m.get("status") == 500] == []
