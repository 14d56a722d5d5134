"""A real browser: headless Chromium (Debian's chromium package, which .ci/run installs) opens
GraphiQL on a running server, a query is typed into it and run, and the result appears. The
browser is driven over the Chrome DevTools Protocol with the websockets library the service
already depends on. Run alone with `pytest -m browser`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from tests.support.graphql import CREATE
from tests.support.server import serving
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Debian's chromium (.ci/run installs it; apt-get install chromium)",
    ),
]
QUERY = '{ ImagingStudy(id: "example-xr") { id status numberOfInstances } }'


class Page:
    """One browser tab, spoken to over the DevTools Protocol."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.next_id = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), 30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 30) -> Any:
        for _ in range(int(seconds * 10)):
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    async def click(self, selector: str) -> None:
        box = await self.wait_for(
            f"(() => {{ const e = document.querySelector('{selector}'); if (!e) return null;"
            " const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    async def key(self, key: str, code: str, modifiers: int = 0, vk: int = 0) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                modifiers=modifiers,
                windowsVirtualKeyCode=vk,
            )


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--remote-debugging-port=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        "about:blank",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert line, "chromium exited before opening DevTools"
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = found[1] if found else None
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(url, max_size=None) as socket:
            yield Page(socket)
    finally:
        process.terminate()
        await process.wait()


async def test_graphiql_runs_a_typed_query(page: Page) -> None:
    app = create_app(Settings())  # the embedded store, seeded, as `make serve` runs it
    async with serving(app) as address:
        await page.send("Page.navigate", url=f"http://{address}/graphql")
        await replace_query(page, QUERY)
        await page.click(".graphiql-execute-button")
        result = await page.wait_for(
            "(() => { const e = document.querySelector('.result-window');"
            " const t = e && e.innerText; return t && t.includes('numberOfInstances') && t; })()"
        )
    assert '"id": "example-xr"' in result
    assert '"numberOfInstances": 2' in result


async def replace_query(page: Page, text: str, settle: bool = True) -> None:
    """Types `text` over what GraphiQL's query editor holds (and, if `settle`, waits until
    the editor shows it)."""
    editor = "document.querySelector('.graphiql-query-editor .CodeMirror')"
    # GraphiQL fills the editor with its welcome text once loaded: type only after that.
    await page.wait_for(f"{editor} && {editor}.CodeMirror.getValue().length > 0")
    await page.click(".graphiql-query-editor .CodeMirror")
    await page.key("a", "KeyA", modifiers=2, vk=65)  # select all (Ctrl+A), then type over
    await page.key("Backspace", "Backspace", vk=8)
    await page.send("Input.insertText", text=text)
    if settle:
        await page.wait_for(f"{editor}.CodeMirror.getValue() === {json.dumps(text)}")


async def test_graphiql_opens_on_the_worklist_and_names_the_service(page: Page) -> None:
    app = create_app(Settings(seed=False))
    async with serving(app) as address:
        await page.send("Page.navigate", url=f"http://{address}/graphql")
        editor = "document.querySelector('.graphiql-query-editor .CodeMirror')"
        text = await page.wait_for(f"{editor} && {editor}.CodeMirror.getValue()")
        title = await page.evaluate("document.title")
    assert 'ImagingStudyList(patient: "Patient/dicom", _count: 10)' in text
    assert "subscription { ImagingStudyChanged" in text  # what to try next
    assert "imaging-api" in title


async def test_graphiql_runs_the_readme_subscription(page: Page) -> None:
    app = create_app(Settings(seed=False))
    subscription = "subscription { ImagingStudyChanged { action id versionId status } }"
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        await page.send("Page.navigate", url=f"http://{address}/graphql")
        # Run as soon as it is typed, as one does after pasting: GraphiQL's own choice of
        # transport lagged behind the editor and sent this over HTTP.
        await replace_query(page, subscription, settle=False)
        await page.click(".graphiql-execute-button")
        for _ in range(300):  # until the subscription is registered, then write
            if app.state.events.subscribers:
                break
            await asyncio.sleep(0.05)
        await http.post(
            "/graphql",
            json={"query": CREATE, "variables": {"res": demo.study("seen-in-graphiql", 1, 1)}},
        )
        result = await page.wait_for(
            "(() => { const e = document.querySelector('.result-window');"
            " const t = e && e.innerText; return t && t.includes('seen-in-graphiql') && t; })()"
        )
    assert '"action": "create"' in result
    assert '"versionId": "1"' in result


async def test_graphiql_sends_the_headers_token_in_connection_init(page: Page) -> None:
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    app = create_app(settings)
    bearer = f"Bearer {token('system/*.*')}"
    subscription = "subscription { ImagingStudyChanged { action id } }"
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        await page.send("Page.navigate", url=f"http://{address}/graphql")
        await page.wait_for("!!document.querySelector('.graphiql-query-editor .CodeMirror')")
        # What the Headers pane holds (GraphiQL keeps it in localStorage), then a fresh page.
        await page.evaluate(
            "localStorage.setItem('graphiql:headers', "
            f"{json.dumps(json.dumps({'Authorization': bearer}))})"
        )
        await page.send("Page.reload")
        await replace_query(page, subscription)
        await page.click(".graphiql-execute-button")
        for _ in range(300):
            if app.state.events.subscribers:
                break
            await asyncio.sleep(0.05)
        await http.post(
            "/graphql",
            json={"query": CREATE, "variables": {"res": demo.study("token-in-init", 1, 1)}},
            headers={"authorization": bearer},
        )
        result = await page.wait_for(
            "(() => { const e = document.querySelector('.result-window');"
            " const t = e && e.innerText; return t && t.includes('token-in-init') && t; })()"
        )
    assert '"action": "create"' in result


async def test_graphiql_shows_a_refused_subscription_instead_of_retrying(page: Page) -> None:
    """With authentication on and no token in the Headers pane, the socket is closed with 4403:
    GraphiQL says so at once (graphql-ws would otherwise retry it, showing nothing)."""
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    async with serving(create_app(settings)) as address:
        await page.send("Page.navigate", url=f"http://{address}/graphql")
        await page.wait_for("!!document.querySelector('.graphiql-query-editor .CodeMirror')")
        await page.evaluate("localStorage.removeItem('graphiql:headers')")
        await page.send("Page.reload")
        await replace_query(page, "subscription { ImagingStudyChanged { action id } }")
        await page.click(".graphiql-execute-button")
        result = await page.wait_for(
            "(() => { const e = document.querySelector('.result-window');"
            " const t = e && e.innerText; return t && t.includes('4403') && t; })()"
        )
    assert "bearer token is required" in result
