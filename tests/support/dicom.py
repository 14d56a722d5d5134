"""Small DICOM files written for a test, one CT image each unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT = "1.2.840.10008.5.1.4.1.1.2"


def write(folder: Path, name: str, **elements: Any) -> Path:
    """A small DICOM file: defaults for one CT image, overridden by `elements`."""
    ds = Dataset()
    base = {
        "StudyInstanceUID": "1.2.3",
        "SeriesInstanceUID": "1.2.3.1",
        "SOPInstanceUID": f"1.2.3.1.{abs(hash(name)) % 10**6}",
        "SOPClassUID": CT,
        "Modality": "CT",
        "PatientID": "MRN1",
        "PatientName": "Doe^Jane",
        "StudyDate": "20240305",
        "StudyTime": "101500",
        "SeriesNumber": 2,
        "InstanceNumber": 1,
    }
    for keyword, value in {**base, **elements}.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.999")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path
