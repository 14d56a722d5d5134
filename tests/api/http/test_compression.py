"""Response compression (api/http/compression.py): the coding the client's Accept-Encoding
asks for, zstd or gzip, whole responses and streamed ones, and none where it cannot help."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import zstandard

from api.http import compression
from api.http.compression import negotiate
from store.interop import demo
from store.mongo.repository import Repository

LIST = "{ ImagingStudyList(_count: 30) { id series { uid instance { uid } } } }"
STATIC = Path(compression.__file__).parent / "static" / "vendor" / "graphiql@3.8.3"


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),  # Chrome's: the faster coding on a tie
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip;q=0", None),  # q=0 refuses a coding (RFC 9110): it is not "gzip"
        ("zstd;q=0, gzip", "gzip"),
        ("zstd;q=0.5, gzip;q=0.8", "gzip"),
        ("zstd;q=0.9, gzip;q=0.8", "zstd"),
        ("*", "zstd"),
        ("*;q=0.1, gzip;q=0.5", "gzip"),
        ("*, zstd;q=0", "gzip"),
        ("br", None),  # not served: identity
        ("gzip;q=nonsense", None),
    ],
)
def test_negotiation(accept: str | None, coding: str | None) -> None:
    assert negotiate(accept) == coding


async def _listing(store: Repository) -> None:
    for n in range(30):
        await store.create(demo.study(f"z{n}", 1, 5))


async def _post(http: httpx.AsyncClient, accept_encoding: str) -> httpx.Response:
    response = await http.post(
        "/graphql", json={"query": LIST}, headers={"accept-encoding": accept_encoding}
    )
    assert response.status_code == 200, response.text
    return response


async def test_zstd_when_asked(store: Repository, http: httpx.AsyncClient) -> None:
    await _listing(store)
    plain = await _post(http, "identity")
    packed = await _post(http, "gzip, deflate, br, zstd")
    assert packed.headers["content-encoding"] == "zstd"
    assert "accept-encoding" in packed.headers["vary"].lower()
    # The frame states its size (some decoders need it), and decodes to the same answer.
    raw = zstandard.ZstdDecompressor().decompress(await _raw(http, "zstd"))
    assert orjson.loads(raw) == plain.json() == packed.json()
    assert int(packed.headers["content-length"]) < len(plain.content) // 2
    assert "content-encoding" not in plain.headers


async def test_refused_coding_is_not_used(store: Repository, http: httpx.AsyncClient) -> None:
    await _listing(store)
    response = await _post(http, "gzip;q=0")
    assert "content-encoding" not in response.headers
    assert len(response.json()["data"]["ImagingStudyList"]) == 30


async def test_gzip_whole_and_large(store: Repository, http: httpx.AsyncClient) -> None:
    # Large enough for the worker thread: one study of 3,000 instances.
    await store.create(demo.study("big", 2, 1_500))
    query = '{ ImagingStudy(id: "big") { series { uid instance { uid number } } } }'
    response = await http.post(
        "/graphql", json={"query": query}, headers={"accept-encoding": "gzip"}
    )
    assert response.headers["content-encoding"] == "gzip"
    assert len(response.content) >= compression.THREAD_SIZE
    assert int(response.headers["content-length"]) < len(response.content)
    series = response.json()["data"]["ImagingStudy"]["series"]
    assert sum(len(s["instance"]) for s in series) == 3_000


async def test_small_answers_stay_plain(http: httpx.AsyncClient) -> None:
    response = await _post(http, "zstd, gzip")
    assert "content-encoding" not in response.headers
    assert response.json()["data"]["ImagingStudyList"] == []


@pytest.mark.parametrize(
    ("coding", "decode"),
    [
        ("zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
        ("gzip", gzip.decompress),
    ],
)
async def test_streamed_file(http: httpx.AsyncClient, coding: str, decode: Any) -> None:
    """A file is sent in chunks: each is compressed and flushed as it goes."""
    path = "/static/vendor/graphiql@3.8.3/graphiql.min.js"
    async with http.stream("GET", path, headers={"accept-encoding": coding}) as response:
        assert response.headers["content-encoding"] == coding
        assert "content-length" not in response.headers
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert decode(raw) == (STATIC / "graphiql.min.js").read_bytes()


async def _raw(http: httpx.AsyncClient, coding: str) -> bytes:
    async with http.stream(
        "POST", "/graphql", json={"query": LIST}, headers={"accept-encoding": coding}
    ) as response:
        return b"".join([chunk async for chunk in response.aiter_raw()])
