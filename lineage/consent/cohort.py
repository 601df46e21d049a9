"""The synthetic chest X-ray cohort's people: patients, scans, labels and consent, no pixels.

``PAT-00001`` has one to three scans (``PAT-00001-SCAN-0001``) and one diagnosis, ``normal``
or ``tuberculosis`` (about 40% tuberculosis); about 5% of patients are registered as
withdrawn from the start. Everything follows from ``(seed, patient number)``.

Two sides read it: the processing job's ``synthetic-cxr`` source renders each scan
(`processing.sources.synthetic_cxr`), and the record demo imports the consent registry that
matches the cohort (`registry_csv`) before the job runs. Kept here, with the registry's
columns, so that the demo needs no job package: the jobs are launched, never imported.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

import numpy as np

from lineage.consent.registry_csv import COLUMNS as REGISTRY_COLUMNS

LABELS = ("normal", "tuberculosis")
DEFAULT_PATIENTS = 240
DEFAULT_SEED = 7
WITHDRAWN_SHARE = 0.05  # patients whose registry row says "withdrawn" from the start


@dataclass(frozen=True)
class CohortScan:
    patient_id: str
    scan_id: str
    label: str
    patient_index: int
    scan_index: int  # 0..2 within the patient
    seed: int

    @property
    def file_path(self) -> str:
        return f"images/{self.scan_id}.png"


def cohort_rng(*parts: object) -> np.random.Generator:
    """The generator for one named aspect of the cohort (a patient, a scan, its anatomy)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def scans(patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED) -> list[CohortScan]:
    """The cohort: patient i has 1-3 scans and one diagnosis (about 40% tuberculosis)."""
    out = []
    counter = 0
    for index in range(1, patients + 1):
        rng = cohort_rng(seed, "patient", index)
        label = LABELS[1] if rng.random() < 0.4 else LABELS[0]
        for scan_index in range(int(rng.integers(1, 4))):
            counter += 1
            out.append(
                CohortScan(
                    patient_id=f"PAT-{index:05d}",
                    scan_id=f"PAT-{index:05d}-SCAN-{counter:04d}",
                    label=label,
                    patient_index=index,
                    scan_index=scan_index,
                    seed=seed,
                )
            )
    return out


def consent_status(seed: int, patient_id: str) -> str:
    return (
        "withdrawn"
        if cohort_rng(seed, "consent", patient_id).random() < WITHDRAWN_SHARE
        else "granted"
    )


def registry_csv(patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED) -> str:
    """The consent registry that matches the cohort, in the reference sample's columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REGISTRY_COLUMNS)
    for scan in scans(patients, seed):
        status = consent_status(seed, scan.patient_id)
        writer.writerow((scan.patient_id, scan.scan_id, scan.file_path, scan.label, status))
    return buffer.getvalue()
