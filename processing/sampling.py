"""Stratified, seeded, nested sampling and splitting.

Why not `train_test_split`: versions must nest. The reference sample draws its 5% and 10%
samples independently, so v2 is not a superset of v1 and "what changed" has no clean answer.
Here every record gets a fixed rank inside its class from ``sha256(seed:record_id)``; a
fraction takes the lowest ranks, so with the same seed the 10% sample contains the 5% one,
and a record keeps its split (train or val) in every version that contains it.

The test split is held out once per source (independent of the fraction), so all versions are
measured on the same images and never train on them.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from processing.sources.base import SourceRecord


class SamplingError(ValueError):
    """Arguments that cannot produce a usable dataset."""


@dataclass(frozen=True)
class Assignment:
    record: SourceRecord
    split: str  # train | val | test


def validate(fraction: float, val_split: float, test_split: float) -> None:
    if not 0 < fraction <= 1:
        raise SamplingError(f"--data-fraction must be in (0, 1], got {fraction}")
    if not 0 <= val_split < 1:
        raise SamplingError(f"--val-split must be in [0, 1), got {val_split}")
    if not 0 <= test_split < 1:
        raise SamplingError(f"--test-split must be in [0, 1), got {test_split}")


def _rank_key(seed: int, record_id: str) -> str:
    return hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()


def _is_val(position: int, val_split: float) -> bool:
    """Every (1/val_split)-th record of a class is val, starting half a period in: a class
    with k sampled records gets round(k * val_split) val records, and a record's split never
    changes as later versions add records after it."""
    return math.floor((position + 1) * val_split + 0.5) > math.floor(position * val_split + 0.5)


def assign(
    records: Sequence[SourceRecord],
    *,
    fraction: float,
    val_split: float,
    test_split: float,
    seed: int,
) -> list[Assignment]:
    validate(fraction, val_split, test_split)
    has_official_test = any(r.official_split == "test" for r in records)
    by_class: dict[str, list[SourceRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)

    out: list[Assignment] = []
    for label in sorted(by_class):
        ranked = sorted(by_class[label], key=lambda r: _rank_key(seed, r.record_id))
        if has_official_test:
            test_pool = [r for r in ranked if r.official_split == "test"]
            pool = [r for r in ranked if r.official_split != "test"]
            test = test_pool[: round(test_split * len(test_pool))]
        else:
            n_test = round(test_split * len(ranked))
            test = ranked[len(ranked) - n_test :] if n_test else []
            pool = ranked[: len(ranked) - n_test]
        sample = pool[: round(fraction * len(pool))]
        out.extend(Assignment(r, "test") for r in test)
        out.extend(
            Assignment(r, "val" if _is_val(i, val_split) else "train") for i, r in enumerate(sample)
        )
    if not any(a.split == "train" for a in out):
        raise SamplingError(
            f"--data-fraction {fraction} leaves no training images "
            f"({len(records)} records in the source): use a larger fraction"
        )
    return out


def assign_by_patient(
    records: Sequence[SourceRecord],
    *,
    fraction: float,
    val_split: float,
    test_split: float,
    seed: int,
) -> list[Assignment]:
    """The record pattern: the same nested, stratified sampling, with patients as the unit.

    Every scan of a patient lands in the same split (scans of one patient are correlated: a
    patient in train and test would leak). Patients are stratified by their set of labels and
    ranked by ``sha256(seed:patient_id)``. Ranks and split boundaries are computed over the
    whole source, before any consent filter, so withdrawing a patient removes exactly that
    patient's records from later versions and moves no other patient between splits.
    """
    validate(fraction, val_split, test_split)
    by_patient: dict[str, list[SourceRecord]] = defaultdict(list)
    for record in records:
        if not record.patient_id:
            raise SamplingError(
                f"record {record.record_id} has no patient id: the record pattern needs a "
                "source with patients (synthetic-cxr, cxr:PATH)"
            )
        by_patient[record.patient_id].append(record)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, scans in by_patient.items():
        strata["+".join(sorted({r.label for r in scans}))].append(patient)

    out: list[Assignment] = []
    for stratum in sorted(strata):
        ranked = sorted(strata[stratum], key=lambda p: _rank_key(seed, p))
        n_test = round(test_split * len(ranked))
        test = ranked[len(ranked) - n_test :] if n_test else []
        pool = ranked[: len(ranked) - n_test]
        sample = pool[: round(fraction * len(pool))]
        splits = {p: "test" for p in test}
        splits.update(
            {p: "val" if _is_val(i, val_split) else "train" for i, p in enumerate(sample)}
        )
        for patient in sorted(splits):
            out.extend(
                Assignment(r, splits[patient])
                for r in sorted(by_patient[patient], key=lambda r: r.record_id)
            )
    if not any(a.split == "train" for a in out):
        raise SamplingError(
            f"--data-fraction {fraction} leaves no training patients "
            f"({len(by_patient)} patients in the source): use a larger fraction"
        )
    return out
