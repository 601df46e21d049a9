"""``synthetic-cxr``: a deterministic, offline stand-in for a chest X-ray set with patients.

Real chest X-ray sets cannot be downloaded here (and carry real patients), so this generates
grayscale chest-scan-like images in two classes, ``normal`` and ``tuberculosis``, for
patients with one to three scans each (``PAT-00001``, ``PAT-00001-SCAN-0001``), and the
matching registry CSV (``patient_id,scan_id,file_path,label,consent_status``).

Learnable but not trivial: every scan has a thorax, two lungs with ribs, mediastinum, soft
texture and noise; tuberculosis adds three to six nodules, cavities or patchy opacities in the
upper lobes, while a third of normal scans carry a small calcified granuloma (a confounder).
Scans of one patient share anatomy and lesions, so splitting by scan instead of by patient
would leak: the record pattern splits by patient.

Everything follows from ``(seed, patient number)``: the same call gives the same bytes.
Write a copy to disk with ``python -m processing.sources.synthetic_cxr --out DIR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# The cohort itself (who, which scans, which label, whose consent) is lineage's, so that the
# record demo can import its consent registry without importing this job package.
from lineage.consent.cohort import (
    DEFAULT_PATIENTS,
    DEFAULT_SEED,
    LABELS,
    WITHDRAWN_SHARE,
    consent_status,
    registry_csv,
    scans,
)
from lineage.consent.cohort import CohortScan as SyntheticScan
from lineage.consent.cohort import cohort_rng as _rng
from processing.sources.base import SourceRecord

__all__ = [
    "DEFAULT_PATIENTS",
    "DEFAULT_SEED",
    "IMAGE_SIZE",
    "LABELS",
    "WITHDRAWN_SHARE",
    "SyntheticScan",
    "consent_status",
    "image",
    "load",
    "registry_csv",
    "render",
    "scans",
    "write",
]

IMAGE_SIZE = 128


def image(scan: SyntheticScan) -> Image.Image:
    return render(scan.seed, scan.patient_index, scan.scan_index, scan.label)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency texture: random values on a coarse grid, bilinearly upsampled."""
    coarse = rng.normal(0, 1, (cells + 1, cells + 1))
    position = np.linspace(0, cells, size)
    low = np.floor(position).astype(int).clip(0, cells - 1)
    frac = position - low
    rows = coarse[low] * (1 - frac)[:, None] + coarse[low + 1] * frac[:, None]
    return np.asarray(rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def render(seed: int, patient: int, scan: int, label: str, size: int = IMAGE_SIZE) -> Image.Image:
    anatomy = _rng(seed, "anatomy", patient)  # shared by every scan of the patient
    shot = _rng(seed, "scan", patient, scan)  # this exposure
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    x = x + shot.normal(0, 0.015)  # patient position on the detector
    y = y + shot.normal(0, 0.01)

    body_w, body_h = 0.42 + anatomy.normal(0, 0.02), 0.55 + anatomy.normal(0, 0.02)
    body = _sigmoid((1 - ((x - 0.5) / body_w) ** 2 - ((y - 0.55) / body_h) ** 2) * 12)
    image = 0.05 + body * (0.55 + 0.15 * y)

    lung_w, lung_h = 0.15 + anatomy.normal(0, 0.012), 0.28 + anatomy.normal(0, 0.015)
    lungs = np.zeros_like(x)
    for side in (-1, 1):
        cx = 0.5 + side * (0.18 + anatomy.normal(0, 0.01))
        lungs = np.maximum(
            lungs, _sigmoid((1 - ((x - cx) / lung_w) ** 2 - ((y - 0.47) / lung_h) ** 2) * 10)
        )
    image -= lungs * (0.32 + anatomy.normal(0, 0.02))
    image += np.exp(-(((x - 0.5) / 0.045) ** 2)) * body * 0.18  # mediastinum and spine
    rib_phase = anatomy.uniform(0, np.pi)
    ribs = np.sin((y + 0.08 * (x - 0.5) ** 2 * 6) * 2 * np.pi * 7 + rib_phase) > 0.75
    image += ribs * lungs * 0.05
    image += _smooth_field(anatomy, size, 10) * 0.025 * lungs  # vessels, soft texture

    def blob(cx: float, cy: float, sigma: float, amplitude: float) -> np.ndarray:
        return np.asarray(amplitude * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)))

    if label == "tuberculosis":
        lesions = _rng(seed, "lesions", patient)
        for _ in range(int(lesions.integers(3, 7))):
            side = lesions.choice([-1, 1])
            cx = 0.5 + side * lesions.uniform(0.1, 0.26) + shot.normal(0, 0.006)
            cy = lesions.uniform(0.22, 0.45) + shot.normal(0, 0.006)
            kind = lesions.random()
            if kind < 0.5:  # nodule
                image += blob(cx, cy, lesions.uniform(0.02, 0.04), lesions.uniform(0.18, 0.32))
            elif kind < 0.8:  # cavity: bright wall, dark centre
                radius = lesions.uniform(0.025, 0.04)
                image += blob(cx, cy, radius, 0.3) - blob(cx, cy, radius * 0.5, 0.22)
            else:  # patchy consolidation
                patch = _smooth_field(lesions, size, 6) > 0.2
                image += patch * blob(cx, cy, 0.08, 0.22)
    elif anatomy.random() < 0.33:  # a calcified granuloma: small, bright, anywhere in a lung
        cx = 0.5 + anatomy.choice([-1, 1]) * anatomy.uniform(0.1, 0.26)
        image += blob(cx, anatomy.uniform(0.3, 0.7), 0.008, 0.22) * lungs

    image = image * shot.uniform(0.9, 1.1) + shot.normal(0, 0.02)  # exposure
    image += shot.normal(0, 0.025, image.shape)  # quantum noise
    pixels = np.clip(image * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def load(patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED) -> list[SourceRecord]:
    records = []
    for scan in scans(patients, seed):

        def loader(s: SyntheticScan = scan) -> Image.Image:
            return image(s)

        records.append(
            SourceRecord(
                scan.scan_id, scan.label, loader, patient_id=scan.patient_id, scan_id=scan.scan_id
            )
        )
    return records


def write(
    out: Path,
    patients: int = DEFAULT_PATIENTS,
    seed: int = DEFAULT_SEED,
    on_image: Callable[[int], None] = lambda _: None,
) -> Path:
    """Write images and ``registry.csv`` under `out` (the layout ``cxr:PATH`` reads)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    for scan in scans(patients, seed):
        image(scan).save(out / scan.file_path, format="PNG", compress_level=6)
        on_image(1)
    registry = out / "registry.csv"
    registry.write_text(registry_csv(patients, seed))
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    registry = write(args.out, args.patients, args.seed)
    print(f"wrote {len(scans(args.patients, args.seed))} scans and {registry}")


if __name__ == "__main__":
    main()
