"""A real Orthanc (bench/orthanc.py) for the DICOMweb sync tests, loaded with pydicom's test
images and a generated multi-series study; skipped with the reason where Orthanc or its
DICOMweb plugin is not installed (.ci/run installs both)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pydicom.data
import pytest

from bench.orthanc import Orthanc, available
from tests.support.dicom import write


# The ports of this suite's Orthancs and proxy: free ones, chosen once per test run, so two
# runs on one machine (two checkouts, a developer beside CI) do not take each other's Orthanc.
def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (each socket held until all are chosen)."""
    with ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


HTTP_PORT, DICOM_PORT, AUTH_HTTP_PORT, AUTH_DICOM_PORT, PROXY_PORT = _free_ports(5)
# pydicom's test files that are valid images with the three UIDs (CT, MR, NM: three studies).
TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")
GENERATED = "1.2.826.0.1.3680043.9.7433.1"  # the generated study's Study Instance UID


def image(folder: Path, name: str, study: str, series: str, number: int, **more: object) -> Path:
    """A small but real image (8 x 8 pixels, 16 bits) of `series` in `study`."""
    pixels = b"".join((i * number % 65_536).to_bytes(2, "little") for i in range(64))
    return write(
        folder,
        name,
        StudyInstanceUID=study,
        SeriesInstanceUID=series,
        SOPInstanceUID=f"{series}.{number}",
        InstanceNumber=number,
        PatientID="MRN-SYNC-1",
        PatientName="Sync^Test",
        Rows=8,
        Columns=8,
        BitsAllocated=16,
        BitsStored=16,
        HighBit=15,
        PixelRepresentation=0,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        PixelData=pixels,
        **more,
    )


def generated_study(
    folder: Path, study: str = GENERATED, sizes: tuple[int, ...] = (3, 2, 1)
) -> list[Path]:
    """A study of len(sizes) series (CT, MR, CT, ...) with sizes[i] instances each."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, size in enumerate(sizes, start=1):
        series = f"{study}.{index}"
        for number in range(1, size + 1):
            paths.append(
                image(
                    folder,
                    f"{index}-{number}.dcm",
                    study,
                    series,
                    number,
                    Modality="MR" if index % 2 == 0 else "CT",
                    SOPClassUID="1.2.840.10008.5.1.4.1.1.4"
                    if index % 2 == 0
                    else "1.2.840.10008.5.1.4.1.1.2",
                    SeriesNumber=index,
                    SeriesDescription=f"series {index}",
                )
            )
    return paths


def loaded(server: Orthanc, folder: Path) -> Orthanc:
    """`server` started and loaded with the test files and the generated study."""
    server.start()
    for name in TEST_FILES:
        server.upload(str(pydicom.data.get_testdata_file(name)))
    for path in generated_study(folder / "generated"):
        server.upload(path)
    return server


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A loaded Orthanc on loopback without authentication, for one test."""
    reason = available()
    if reason:
        pytest.skip(reason)
    server = Orthanc(HTTP_PORT, DICOM_PORT, tmp_path / "orthanc")
    try:
        yield loaded(server, tmp_path)
    finally:
        server.stop()
