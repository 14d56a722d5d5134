"""A real Orthanc with its DICOMweb plugin, started on loopback with a temporary configuration:
the PACS the DICOMweb sync is tested against (tests/support/orthanc.py) and benchmarked with.

Debian's `orthanc` and `orthanc-dicomweb` packages provide the binary and the plugin (`.ci/run`
installs them); `available()` says why they cannot run here, for a skip with the reason.
Bench never imports tests; tests may import this module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

BINARY_NAMES = ("Orthanc",)
BINARY_DIRS = (Path("/usr/sbin"), Path("/usr/bin"), Path("/usr/local/bin"))
PLUGIN_DIRS = (
    Path("/usr/share/orthanc/plugins"),
    Path("/usr/lib/orthanc"),
    Path("/usr/local/share/orthanc/plugins"),
)
START_TIMEOUT = 30.0  # seconds; Orthanc creates its SQLite index on the first start


def binary() -> Path | None:
    """The Orthanc executable, on PATH or where Debian puts it (/usr/sbin is not always on
    PATH for a non-root user)."""
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
        for folder in BINARY_DIRS:
            if (folder / name).is_file():
                return folder / name
    return None


def plugin() -> Path | None:
    """The DICOMweb plugin's shared library (the unversioned link first, then any version)."""
    for folder in PLUGIN_DIRS:
        exact = folder / "libOrthancDicomWeb.so"
        if exact.is_file():
            return exact
        versions = sorted(folder.glob("libOrthancDicomWeb.so*")) if folder.is_dir() else []
        if versions:
            return versions[-1]
    return None


def available() -> str | None:
    """Why a real Orthanc cannot run here (binary or plugin missing), or None when it can."""
    if binary() is None:
        return "Orthanc is not installed (apt-get install orthanc)"
    if plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return None


class Orthanc:
    """One Orthanc process on 127.0.0.1 with the DICOMweb plugin, its storage and index in
    `workdir`. With `users`, HTTP basic authentication is on and those are the only accounts.

    Orthanc 1.10 has no HTTP bind address: RemoteAccessAllowed false makes it refuse every
    client that is not on loopback. Its DICOM listener (which would bind every interface) is
    off, since instances are loaded through the REST API; `dicom_port` is still configured
    so the port stays inside the range the caller owns.
    """

    def __init__(
        self,
        http_port: int,
        dicom_port: int,
        workdir: Path | str,
        *,
        users: dict[str, str] | None = None,
    ) -> None:
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.workdir = Path(workdir)
        self.users = dict(users or {})
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / "orthanc.log"

    @property
    def auth(self) -> tuple[str, str] | None:
        """The first registered account, for the REST calls of this launcher."""
        return next(iter(self.users.items()), None)

    def config(self) -> dict[str, object]:
        """The temporary configuration (Orthanc merges nothing else: one file is given)."""
        found = plugin()
        return {
            "Name": f"imaging-test-{self.http_port}",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomServerEnabled": False,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(found)] if found else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "StableAge": 1,
            "SaveJobs": False,
            "ExecuteLuaEnabled": False,
        }

    def start(self) -> Self:
        """Start Orthanc and wait until /system answers; raise with its log tail otherwise.
        Starting one that runs already does nothing (so `with` works on a started one)."""
        if self._process is not None and self._process.poll() is None:
            return self
        reason = available()
        if reason:
            raise RuntimeError(reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        log = self._log.open("ab")
        try:
            self._process = subprocess.Popen(
                [str(binary()), "--no-jobs", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                answer = httpx.get(f"{self.url}/system", auth=self.auth, timeout=1.0)
                if answer.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start on {self.url}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines Orthanc wrote, for an error message."""
        try:
            text = self._log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def upload(self, dicom: Path | str | bytes) -> dict[str, object]:
        """Store one DICOM file (a path or its bytes) through POST /instances; Orthanc's answer
        (ID, ParentStudy, Status: Success or AlreadyStored)."""
        body = dicom if isinstance(dicom, bytes) else Path(dicom).read_bytes()
        answer = httpx.post(
            f"{self.url}/instances",
            content=body,
            auth=self.auth,
            headers={"Content-Type": "application/dicom"},
            timeout=30.0,
        )
        answer.raise_for_status()
        result: dict[str, object] = answer.json()
        return result

    def stop(self) -> None:
        """End Orthanc (SIGTERM, then SIGKILL after 10 s); its files stay in workdir."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
