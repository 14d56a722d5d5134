"""A tiny HTTP proxy on loopback in front of a real DICOMweb server, which breaks the answers
for chosen paths (an HTTP 500, malformed JSON, a hang past the client's timeout) and records
the Authorization headers it was sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

FAULTS = ("500", "malformed", "hang")


@contextmanager
def proxy(port: int, upstream: str, faults: dict[str, str]) -> Iterator[list[str | None]]:
    """Serve 127.0.0.1:`port`, forwarding GETs to `upstream`; a request whose path contains a
    key of `faults` gets that fault instead. Yields the Authorization headers received."""
    assert set(faults.values()) <= set(FAULTS), faults
    seen: list[str | None] = []
    released = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            fault = next((f for key, f in faults.items() if key in self.path), None)
            if fault == "hang":
                released.wait(10)  # past the client's timeout; released when the test ends
                return
            if fault == "500":
                self._answer(500, b"internal error", "text/plain")
                return
            if fault == "malformed":
                self._answer(
                    200, b'[{"0020000D": {"vr": "UI", "Value": ["1.2', "application/dicom+json"
                )
                return
            headers = {
                k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")
            }
            answer = httpx.get(upstream + self.path, headers=headers, timeout=30)
            self._answer(answer.status_code, answer.content, answer.headers.get("content-type", ""))

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
