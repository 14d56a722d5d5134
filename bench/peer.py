"""The peer in the bench: the same generated DICOM data in Orthanc (with its DICOMweb plugin) and
in this service, and the ratios ours / Orthanc (below 1: ahead) for a worklist, opening a study,
a 100-instance page and 16 concurrent viewers. Orthanc is measured in two forms: DICOMweb
(QIDO-RS, WADO-RS metadata), what a web viewer uses, and its native REST API (`/tools/find`,
answered from its index alone), the strongest form of the peer.

The service loads the files as `imaging-api serve --ingest-dicom` does (store/interop/ingest.py),
Orthanc through its REST API (POST /instances). Both get the same requests from the same client
(httpx, identity encoding, one connection per client). Runs only when Orthanc and its DICOMweb
plugin are installed (bench/orthanc.py says why not otherwise)."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bench import orthanc
from bench.http import free_port

if TYPE_CHECKING:
    from bench.__main__ import Bench

CT = "1.2.840.10008.5.1.4.1.1.2"
SERIES, PER_SERIES = 4, 500  # the study a viewer opens: 2,000 instances
WORKLIST = 30  # other studies, 1 series of 4 instances each
PAGE, OFFSET = 100, 200
VIEWERS, OPENS = 16, 2  # concurrent viewers, studies each opens
SECONDS = 2.0  # about how long each side of a row is timed
IDENTITY = {"accept-encoding": "identity"}
Opens = Callable[[httpx.AsyncClient], Awaitable[Any]]  # one request (or a few) of a scenario

WORKLIST_QUERY = """{ ImagingStudyList(_count: 50) { id status started description
  numberOfSeries numberOfInstances subject { reference display } modality { coding { code } } } }"""
TREE = """query($id: ID!) { ImagingStudy(id: $id) { id status started description numberOfSeries
  numberOfInstances subject { reference display } series { uid number modality { coding { code } }
  description numberOfInstances bodySite { concept { coding { code display } } } started
  instance { uid sopClass { code } number } } } }"""
PAGE_QUERY = """query($id: ID!, $s: String!, $n: Int!, $o: Int!) { ImagingStudy(id: $id) {
  series(uid: $s) { uid instance(_count: $n, _offset: $o) { uid sopClass { code } number } } } }"""
# QIDO-RS asks for what the GraphQL queries select beyond the defaults.
STUDY_FIELDS = "includefield=StudyDescription&includefield=NumberOfStudyRelatedInstances"
SERIES_FIELDS = "includefield=SeriesDescription&includefield=BodyPartExamined"


def write_study(folder: Path, study: int, series: int, per_series: int, patient: str) -> str:
    """`series` x `per_series` small CT files (headers only, no pixels); its Study UID."""
    study_uid = generate_uid(entropy_srcs=[f"peer-study-{study}"])
    for s in range(1, series + 1):
        series_uid = generate_uid(entropy_srcs=[f"peer-series-{study}-{s}"])
        for n in range(1, per_series + 1):
            ds = Dataset()
            ds.PatientID, ds.PatientName = patient, f"Peer^{patient}"
            ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
            ds.StudyInstanceUID, ds.StudyID = study_uid, str(study)
            ds.StudyDate, ds.StudyTime = f"2024{1 + study % 12:02d}{1 + study % 28:02d}", "101500"
            ds.AccessionNumber, ds.StudyDescription = f"A{study:06d}", f"CT chest {study}"
            ds.ReferringPhysicianName = "Ref^Doctor"
            ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, s
            ds.Modality, ds.SeriesDescription, ds.BodyPartExamined = "CT", f"Axial {s}", "CHEST"
            ds.SeriesDate, ds.SeriesTime = ds.StudyDate, "101600"
            ds.SOPClassUID, ds.InstanceNumber = CT, n
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"peer-sop-{study}-{s}-{n}"])
            ds.Rows, ds.Columns, ds.ImageType = 512, 512, ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CT
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(folder / f"{study}-{s}-{n}.dcm", enforce_file_format=True)
    return str(study_uid)


def generate(folder: Path) -> tuple[str, list[Path]]:
    """The opened study and the worklist's other studies; (its Study UID, every file)."""
    uid = write_study(folder, 0, SERIES, PER_SERIES, "p0")
    for study in range(1, WORKLIST + 1):
        write_study(folder, study, 1, 4, f"p{study % 7}")
    return uid, sorted(folder.glob("*.dcm"))


async def _once(run: Opens, session: httpx.AsyncClient) -> float:
    start = time.perf_counter()
    await run(session)
    return time.perf_counter() - start


async def paired(ours: Opens, theirs: Opens, session: httpx.AsyncClient) -> tuple[float, float]:
    """Median ms of each, timed in alternation (a busy moment of the machine weighs on both),
    as many times as fit in about SECONDS each (3 to 60), after a warm-up."""
    first = [await _once(ours, session), await _once(theirs, session)]
    counts = [min(max(int(SECONDS / t), 3), 60) for t in first]
    times: tuple[list[float], list[float]] = ([], [])
    while any(len(done) < count for done, count in zip(times, counts, strict=True)):
        for run, done, count in zip((ours, theirs), times, counts, strict=True):
            if len(done) < count:
                done.append(await _once(run, session))
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


async def per_open(opens: Opens) -> float:
    """ms per open (wall time over opens) of VIEWERS concurrent viewers, OPENS opens each."""
    async with httpx.AsyncClient(
        timeout=600, limits=httpx.Limits(max_connections=VIEWERS)
    ) as session:
        await opens(session)
        start = time.perf_counter()
        await asyncio.gather(*(_viewer(session, opens) for _ in range(VIEWERS)))
        return (time.perf_counter() - start) * 1000 / (VIEWERS * OPENS)


async def _viewer(session: httpx.AsyncClient, opens: Opens) -> None:
    for _ in range(OPENS):
        await opens(session)


async def _read(session: httpx.AsyncClient, method: str, url: str, **options: Any) -> Any:
    """The decoded JSON answer of a read, sent again once when the server had closed the
    kept-alive connection as the request went out (Orthanc's HTTP server, 8 threads here, did
    so with 16 viewers): a race of connection reuse, not a failed read."""
    try:
        response = await session.request(method, url, headers=IDENTITY, **options)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        response = await session.request(method, url, headers=IDENTITY, **options)
    return _ok(response).json()


def _ok(response: httpx.Response) -> httpx.Response:
    response.raise_for_status()
    if response.headers.get("content-type", "").startswith("application/json"):
        assert b'"errors"' not in response.content[:300], response.text[:300]
    return response


class Peer:
    """The requests of each scenario, to the service and to Orthanc."""

    def __init__(self, ours: str, peer: orthanc.Orthanc, study_uid: str) -> None:
        self.ours, self.peer, self.uid = ours, peer, study_uid
        self.study_id = ""
        self.series_uid = ""

    async def ours_post(self, session: httpx.AsyncClient, query: str, **variables: Any) -> Any:
        body = {"query": query, "variables": variables}
        return await _read(session, "POST", f"{self.ours}/graphql", json=body)

    async def peer_get(self, session: httpx.AsyncClient, path: str) -> Any:
        return await _read(session, "GET", f"{self.peer.url}{path}")

    async def peer_find(self, session: httpx.AsyncClient, **request: Any) -> Any:
        return await _read(session, "POST", f"{self.peer.url}/tools/find", json=request)

    async def check(self, session: httpx.AsyncClient) -> None:
        """Both hold the same data, and each request answers what the scenario says."""
        listed = (await self.ours_post(session, WORKLIST_QUERY))["data"]["ImagingStudyList"]
        opened = next(s for s in listed if s["numberOfInstances"] == SERIES * PER_SERIES)
        self.study_id = opened["id"]
        tree = (await self.ours_post(session, TREE, id=self.study_id))["data"]["ImagingStudy"]
        self.series_uid = tree["series"][1]["uid"]
        studies = await self.peer_get(session, f"/dicom-web/studies?limit=50&{STUDY_FIELDS}")
        metadata = await self.peer_get(session, f"/dicom-web/studies/{self.uid}/metadata")
        found = await self.peer_find(
            session, Level="Instance", Query={"StudyInstanceUID": self.uid}, Expand=True
        )
        page = (await self.ours_post(session, PAGE_QUERY, **self._page()))["data"]
        peer_page = await self.peer_get(session, self._qido_page())
        counts = {
            "worklist": (len(listed), len(studies), WORKLIST + 1),
            "instances": (
                sum(len(s["instance"]) for s in tree["series"]),
                len(metadata),
                len(found),
                SERIES * PER_SERIES,
            ),
            "page": (
                len(page["ImagingStudy"]["series"][0]["instance"]),
                len(peer_page),
                PAGE,
            ),
        }
        for what, seen in counts.items():
            assert len(set(seen)) == 1, f"{what}: ours and Orthanc differ: {seen}"

    def _page(self) -> dict[str, Any]:
        return {"id": self.study_id, "s": self.series_uid, "n": PAGE, "o": OFFSET}

    def _qido_page(self) -> str:
        return (
            f"/dicom-web/studies/{self.uid}/series/{self.series_uid}/instances"
            f"?limit={PAGE}&offset={OFFSET}"
        )

    def scenarios(
        self,
    ) -> Iterator[tuple[str, Opens, str, Opens]]:
        """(row, ours, Orthanc's form, Orthanc) for each single-client row."""
        uid = self.uid
        worklist = ("worklist of 31 studies", lambda s: self.ours_post(s, WORKLIST_QUERY))
        yield (
            *worklist,
            "QIDO-RS studies",
            lambda s: self.peer_get(s, f"/dicom-web/studies?limit=50&{STUDY_FIELDS}"),
        )
        yield (
            *worklist,
            "/tools/find",
            lambda s: self.peer_find(s, Level="Study", Query={}, Expand=True, Limit=50),
        )
        tree = ("open a 2,000-instance study", lambda s: self.ours_post(s, TREE, id=self.study_id))

        async def qido(s: httpx.AsyncClient) -> None:
            await self.peer_get(s, f"/dicom-web/studies/{uid}/series?{SERIES_FIELDS}")
            await self.peer_get(s, f"/dicom-web/studies/{uid}/instances")

        async def find(s: httpx.AsyncClient) -> None:
            await self.peer_find(s, Level="Series", Query={"StudyInstanceUID": uid}, Expand=True)
            await self.peer_find(s, Level="Instance", Query={"StudyInstanceUID": uid}, Expand=True)

        yield (*tree, "QIDO-RS series + instances", qido)
        yield (
            *tree,
            "WADO-RS metadata",
            lambda s: self.peer_get(s, f"/dicom-web/studies/{uid}/metadata"),
        )
        yield (*tree, "/tools/find series + instances", find)
        page = (
            f"page of {PAGE} instances at {OFFSET}",
            lambda s: self.ours_post(s, PAGE_QUERY, **self._page()),
        )
        yield (*page, "QIDO-RS instances", lambda s: self.peer_get(s, self._qido_page()))
        yield (
            *page,
            "/tools/find",
            lambda s: self.peer_find(
                s,
                Level="Instance",
                Query={"SeriesInstanceUID": self.series_uid},
                Expand=True,
                Limit=PAGE,
                Since=OFFSET,
            ),
        )


@asynccontextmanager
async def service(port: int, folder: Path, log: Path) -> Any:
    """`imaging-api serve --ingest-dicom folder` on 127.0.0.1:port, until it answers."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("imaging-api")),
            "serve",
            "--port",
            str(port),
            "--no-seed",
            "--ingest-dicom",
            str(folder),
            stdout=out,
            stderr=out,
            env={**os.environ, "IMAGING_LOG_FORMAT": "json"},
        )
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(1200):
                with suppress(httpx.HTTPError):
                    if (await probe.get(f"http://127.0.0.1:{port}/readyz", timeout=1)).is_success:
                        break
                if process.returncode is not None:
                    raise RuntimeError(f"the service did not start: see {log}")
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


def upload(peer: orthanc.Orthanc, files: list[Path]) -> None:
    """Every file into Orthanc through POST /instances, 4 at a time on one connection pool
    (Orthanc.upload opens a client per call, whose set-up dwarfs a small file's upload)."""
    with httpx.Client(auth=peer.auth, timeout=60) as session, ThreadPoolExecutor(4) as pool:

        def one(path: Path) -> Any:
            answer = session.post(
                f"{peer.url}/instances",
                content=path.read_bytes(),
                headers={"content-type": "application/dicom"},
            )
            answer.raise_for_status()
            return answer.json()

        for answer in pool.map(one, files):
            assert answer.get("Status") in ("Success", "AlreadyStored"), answer


async def against_orthanc(bench: Bench) -> None:
    """The P rows: ours / Orthanc for each scenario and form of the peer."""
    reason = orthanc.available()
    if reason:
        print(f"peer rows skipped: {reason}", file=sys.stderr)
        bench.target("P: ahead of Orthanc on every row", True, f"not measured: {reason}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as scratch:
        root = Path(scratch)
        (root / "dicom").mkdir()
        start = time.perf_counter()
        uid, files = generate(root / "dicom")
        print(f"peer: {len(files)} DICOM files written in {time.perf_counter() - start:.1f} s")
        peer = orthanc.Orthanc(free_port(), free_port(), root / "orthanc")
        with peer:
            start = time.perf_counter()
            await asyncio.to_thread(upload, peer, files)
            loaded = time.perf_counter() - start
            print(f"peer: loaded into Orthanc in {loaded:.1f} s", file=sys.stderr)
            async with service(free_port(), root / "dicom", root / "service.log") as ours:
                await _measure(bench, Peer(ours, peer, uid))


async def _measure(bench: Bench, peer: Peer) -> None:
    async with httpx.AsyncClient(timeout=600) as session:
        await peer.check(session)
        for row, ours, form, theirs in peer.scenarios():
            ours_ms, peer_ms = await paired(ours, theirs, session)
            _row(bench, f"{row}, vs Orthanc {form}", ours_ms, peer_ms)
    tree = next(s for s in peer.scenarios() if s[2] == "WADO-RS metadata")
    find = next(s for s in peer.scenarios() if s[2].startswith("/tools/find series"))
    ours_ms = await per_open(tree[1])
    for form, opens in (("WADO-RS metadata", tree[3]), ("/tools/find", find[3])):
        peer_ms = await per_open(opens)
        _row(bench, f"{VIEWERS} viewers opening, ms per open, vs {form}", ours_ms, peer_ms)


def _row(bench: Bench, what: str, ours_ms: float, peer_ms: float) -> None:
    ratio = ours_ms / peer_ms
    bench.row("P", what, ours_ms, f"Orthanc {peer_ms:.1f} ms; ours / Orthanc {ratio:.3f}")
    bench.target(f"P: ahead of Orthanc: {what}", ratio < 1, f"ours / Orthanc = {ratio:.3f}")
