"""The `imaging-api` command as a user runs it: a real process, against a real server on a free
loopback port. Its standard output is the command's result and nothing else, errors say what
to do, exit codes tell a script what happened, and `serve` logs read well where they are read."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.cli import commands as cli
from api.settings import Settings, SettingsError
from store.interop import dicom
from tests.support.server import free_port

EXE = str(Path(sys.executable).parent / "imaging-api")
START_SECONDS = 60  # a bound on start-up on a loaded machine, not a speed expectation


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without the settings that would point the CLI elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("MONGODB_URI", "IMAGING_URL", "IMAGING_PORT", "IMAGING_HOST", "IMAGING_LOG_FORMAT")
    }
    return {**env, **extra}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(**env),
        stdin=subprocess.DEVNULL,
    )


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")


@dataclass
class Server:
    port: int
    log: Path  # its standard error: not a terminal, so JSON lines


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`imaging-api serve` as `make serve` runs it (seeded), on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [EXE, "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=environment(),
        )
    try:
        wait_until_up(port, process)
        yield Server(port, log)
    finally:
        process.terminate()
        process.wait(30)


def test_export_bundle_stdout_is_one_json_document(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/graphql"
    done = run("export", "--format", "bundle", "--modality", "CT", "--url", url)
    assert done.returncode == 0, done.stderr
    bundle = json.loads(done.stdout)  # the whole of standard output, nothing around it
    assert bundle["resourceType"] == "Bundle"
    assert bundle["total"] == len(bundle["entry"]) > 0
    # Standard error holds the command's own summary only: no line per HTTP call.
    assert done.stderr.splitlines() == [f"exported {bundle['total']} studies"]


def test_ingest_talks_to_the_configured_port_quietly(server: Server) -> None:
    folder = str(dicom.test_files())
    done = run("ingest-dicom", "--verbose", folder, IMAGING_PORT=str(server.port))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no httpx lines; no progress line either: not a terminal
    listed = [line for line in done.stdout.splitlines() if line.startswith("skipped ")]
    table = done.stdout.split("files read", 1)[1]
    skipped = int(re.search(r"files skipped +(\d+)", table)[1])  # type: ignore[index]
    assert len(listed) == skipped > 0
    assert f"skipped {folder}/README.txt: not a DICOM file" in listed
    quiet = run("ingest-dicom", folder, IMAGING_PORT=str(server.port))
    assert "skipped " not in quiet.stdout.split("files read", 1)[0]  # listed only on request


def test_serve_logs_json_lines_when_not_on_a_terminal(server: Server) -> None:
    httpx.post(
        f"http://127.0.0.1:{server.port}/graphql",
        headers={"x-request-id": "json-1"},
        json={"query": 'query Worklist { ImagingStudyList(patient: "p-77") { id } }'},
    )
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    operation = next(
        line
        for line in lines
        if line["request_id"] == "json-1" and line["logger"] == "imaging.audit"
    )
    assert operation["message"] == "query Worklist OK"
    assert operation["duration_ms"] >= 0
    assert "p-77" not in server.log.read_text()  # no variables or search values in the log


def test_a_port_in_use_is_one_line_that_suggests_another(server: Server) -> None:
    # The next port is taken too: the one suggested must be one that is free.
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # taken already, by someone else: as good
            taken.bind(("127.0.0.1", server.port + 1))
            taken.listen()
        done = run("serve", "--port", str(server.port))
        assert done.returncode != 0
        [line] = done.stderr.splitlines()
        suggested = int(
            re.fullmatch(
                rf"imaging-api serve: port {server.port} on 127\.0\.0\.1 is already in use "
                r"\(another server\?\); choose another with --port (\d+), or set IMAGING_PORT",
                line,
            )[1]
        )  # type: ignore[index]
        assert suggested > server.port + 1
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", suggested))  # free indeed
    assert "serving" not in done.stderr


def serve_on_a_terminal(**env: str) -> list[str]:
    """The lines `serve` writes to a terminal (a pseudo-terminal) while answering one
    operation, request id tty-1, whose search value is p-77."""
    port = free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [EXE, "serve", "--port", str(port), "--no-seed"],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=environment(**env),
    )
    os.close(follower)
    try:
        wait_until_up(port, process)
        httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            headers={"x-request-id": "tty-1"},
            json={"query": 'query Worklist { ImagingStudyList(patient: "p-77") { id } }'},
        )
        output = b""
        deadline = time.monotonic() + START_SECONDS
        while b"POST /graphql" not in output and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                output += os.read(leader, 65536)
    finally:
        process.terminate()
        process.wait(30)
        os.close(leader)
    assert "p-77" not in output.decode()  # no variables or search values in the log
    return output.decode().splitlines()


def test_serve_on_a_terminal_logs_readable_lines() -> None:
    lines = serve_on_a_terminal()
    assert all(not line.startswith("{") for line in lines), lines
    assert any(
        re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO +tty-1 query Worklist OK \d+ ms", line)
        for line in lines
    ), lines
    assert any(
        re.fullmatch(
            r"\d\d:\d\d:\d\d\.\d{3} INFO +tty-1 POST /graphql 200 from "
            r"127\.0\.0\.1:\d+",
            line,
        )
        for line in lines
    ), lines


def test_log_format_json_is_json_even_on_a_terminal() -> None:
    lines = [json.loads(line) for line in serve_on_a_terminal(IMAGING_LOG_FORMAT="json")]
    messages = [line["message"] for line in lines]
    assert "query Worklist OK" in messages
    assert any(message.startswith("serving GraphQL on") for message in messages)


def test_log_format_text_is_text_anywhere() -> None:
    from api.http.logs import TextFormatter, configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure(fmt="text", stream=io.StringIO())  # not a terminal
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_missing_path_fails_and_is_named(tmp_path: Path) -> None:
    (tmp_path / "here.dcm").write_bytes(b"not DICOM")
    for command in ("ingest-dicom", "import"):
        done = run(
            command,
            str(tmp_path / "here.dcm"),
            str(tmp_path / "typo"),
            IMAGING_PORT=str(free_port()),
        )
        assert done.returncode == 2
        assert done.stderr == (
            f"imaging-api {command}: no such file or folder: {tmp_path / 'typo'}\n"
        )


def test_an_unreachable_server_names_the_url_and_how_to_change_it() -> None:
    url = f"http://127.0.0.1:{free_port()}/graphql"
    done = run("export", IMAGING_URL=url)
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr.strip()
    assert message.startswith(f"imaging-api export: cannot reach {url} (")
    assert "--url or IMAGING_URL" in message
    assert "\n" not in message


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


@pytest.mark.parametrize("command", list(_commands()))
def test_every_command_has_version_help_and_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _commands()[command]
    assert [a.dest for a in parser._actions if not a.help] == []  # every option says what it does
    argv = [command] if command else []
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0
    help_text = capsys.readouterr().out.rstrip().splitlines()
    assert help_text[-2] == "example:"
    assert help_text[-1].startswith(f"  imaging-api {command}".rstrip())
    with pytest.raises(SystemExit):
        cli.main([*argv, "--version"])
    assert re.fullmatch(r"imaging-api \d+\.\d+\.\d+\n", capsys.readouterr().out)


def test_the_cli_url_follows_the_settings() -> None:
    assert Settings().server_url == "http://127.0.0.1:8000/graphql"
    assert Settings.from_env({"IMAGING_PORT": "9001"}).server_url == "http://127.0.0.1:9001/graphql"
    assert (
        Settings.from_env({"IMAGING_HOST": "0.0.0.0", "IMAGING_PORT": "9001"}).server_url
        == "http://127.0.0.1:9001/graphql"
    )
    assert Settings(host="::1").server_url == "http://[::1]:8000/graphql"
    given = "https://imaging.example/api/graphql"
    assert Settings.from_env({"IMAGING_URL": given, "IMAGING_PORT": "9001"}).server_url == given
    with pytest.raises(SettingsError, match="IMAGING_URL must be an http:// or https:// URL"):
        Settings.from_env({"IMAGING_URL": "127.0.0.1:8000"})
    with pytest.raises(SettingsError, match="IMAGING_LOG_FORMAT must be one of auto, text, json"):
        Settings.from_env({"IMAGING_LOG_FORMAT": "pretty"})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_listed_lines_start_clean_under_the_progress_line() -> None:
    from api.transfer.progress import Progress

    screen = Terminal()
    progress = Progress("files", screen)
    progress.step(1, "a.dcm")
    progress.clear()
    # The cursor is back at the start of a blank line: a listed line overwrites no progress.
    assert screen.getvalue().endswith("\r" + " " * 80 + "\r")
    progress.step(1, "b.dcm")
    assert screen.getvalue().rsplit("\r", 1)[1].startswith("files: 2 (")  # and it is back


def test_a_reader_that_stops_early_gets_no_traceback(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/graphql"
    process = subprocess.Popen(
        [EXE, "export", "--url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()  # `| head -1`: one study, then the pipe closes
    process.stdout.close()
    errors = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(60) == 1
    assert json.loads(first)["resourceType"] == "ImagingStudy"
    assert errors == ""
