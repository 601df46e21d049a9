"""Nested, stratified, seeded sampling: the property that makes versions comparable."""

from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

from lineage.consent.snapshot import Snapshot
from processing.job import _consent_filter
from processing.sampling import Assignment, SamplingError, assign, assign_by_patient
from processing.sources.base import SourceRecord


def records(per_class: dict[str, int], official_test: int = 0) -> list[SourceRecord]:
    out = []
    for label, n in per_class.items():
        for i in range(n):
            split = None
            if official_test:
                split = "test" if i < official_test else "train"
            out.append(SourceRecord(f"{label}-{i}", label, lambda: Image.new("L", (2, 2)), split))
    return out


SOURCE = records({"a": 180, "b": 95, "c": 40})


def split_ids(result: list[Assignment], split: str | None = None) -> set[str]:
    return {a.record.record_id for a in result if split is None or a.split == split}


def test_larger_fraction_contains_smaller_one_and_keeps_splits() -> None:
    small = assign(SOURCE, fraction=0.05, val_split=0.1, test_split=0.1, seed=7)
    large = assign(SOURCE, fraction=0.10, val_split=0.1, test_split=0.1, seed=7)
    assert split_ids(small) < split_ids(large)
    large_split = {a.record.record_id: a.split for a in large}
    assert all(large_split[a.record.record_id] == a.split for a in small)


def test_test_split_is_fixed_per_source_and_disjoint() -> None:
    a = assign(SOURCE, fraction=0.2, val_split=0.1, test_split=0.1, seed=7)
    b = assign(SOURCE, fraction=0.9, val_split=0.2, test_split=0.1, seed=7)
    assert split_ids(a, "test") == split_ids(b, "test")
    assert not split_ids(a, "test") & (split_ids(a, "train") | split_ids(a, "val"))


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.37, 1.0])
def test_stratified_within_one_image_per_class(fraction: float) -> None:
    result = assign(SOURCE, fraction=fraction, val_split=0.1, test_split=0.1, seed=1)
    sampled = Counter(a.record.label for a in result if a.split != "test")
    tested = Counter(a.record.label for a in result if a.split == "test")
    for label, total in Counter(r.label for r in SOURCE).items():
        pool = total - tested[label]
        assert abs(sampled[label] - fraction * pool) <= 1, label


def test_val_share_is_exact_even_for_small_samples() -> None:
    result = assign(SOURCE, fraction=0.05, val_split=0.1, test_split=0.1, seed=3)
    for label in ("a", "b", "c"):
        in_class = [x for x in result if x.record.label == label and x.split != "test"]
        vals = sum(x.split == "val" for x in in_class)
        assert vals == round(len(in_class) * 0.1)


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    one = assign(SOURCE, fraction=0.3, val_split=0.1, test_split=0.1, seed=11)
    again = assign(list(reversed(SOURCE)), fraction=0.3, val_split=0.1, test_split=0.1, seed=11)
    other = assign(SOURCE, fraction=0.3, val_split=0.1, test_split=0.1, seed=12)
    assert {(a.record.record_id, a.split) for a in one} == {
        (a.record.record_id, a.split) for a in again
    }
    assert split_ids(one) != split_ids(other)


def test_official_test_split_is_used_when_the_source_has_one() -> None:
    source = records({"x": 50, "y": 50}, official_test=10)
    result = assign(source, fraction=0.5, val_split=0.0, test_split=0.5, seed=0)
    tested = [a.record for a in result if a.split == "test"]
    assert len(tested) == 10 and all(r.official_split == "test" for r in tested)
    assert all(a.record.official_split == "train" for a in result if a.split != "test")


@pytest.mark.parametrize(
    ("fraction", "val", "test"), [(0, 0.1, 0.1), (1.5, 0.1, 0.1), (0.5, 1.0, 0.1), (0.5, 0.1, -1)]
)
def test_bad_fractions_are_rejected(fraction: float, val: float, test: float) -> None:
    with pytest.raises(SamplingError):
        assign(SOURCE, fraction=fraction, val_split=val, test_split=test, seed=0)


def test_fraction_too_small_for_any_training_image() -> None:
    with pytest.raises(SamplingError, match="no training images"):
        assign(records({"a": 5}), fraction=0.01, val_split=0.1, test_split=0.1, seed=0)


def patient_records(patients: int) -> list[SourceRecord]:
    out = []
    for p in range(patients):
        label = "tuberculosis" if p % 3 == 0 else "normal"
        for s in range(1 + p % 3):
            out.append(
                SourceRecord(
                    f"P{p}-S{s}",
                    label,
                    lambda: Image.new("L", (2, 2)),
                    patient_id=f"P{p}",
                    scan_id=f"P{p}-S{s}",
                )
            )
    return out


def test_record_pattern_keeps_every_patient_in_one_split() -> None:
    result = assign_by_patient(
        patient_records(200), fraction=0.5, val_split=0.2, test_split=0.1, seed=3
    )
    splits: dict[str, set[str]] = {}
    for a in result:
        splits.setdefault(a.record.patient_id or "", set()).add(a.split)
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "val", "test"}
    # every scan of a sampled patient comes along
    sampled = set(splits)
    assert {a.record.record_id for a in result} == {
        r.record_id for r in patient_records(200) if r.patient_id in sampled
    }


def test_withdrawing_a_patient_removes_exactly_that_patient() -> None:
    """The consent filter runs after sampling: no other patient changes split or drops out."""
    source = patient_records(120)
    everyone = {f"P{p}" for p in range(120)}

    def version(consenting: set[str]) -> dict[str, str]:
        snapshot = Snapshot.build(
            "2026-11-02T00:00:00.000000Z",
            {p: "granted" if p in consenting else "withdrawn" for p in everyone},
            1,
            "0" * 64,
        )
        sampled = assign_by_patient(source, fraction=0.6, val_split=0.2, test_split=0.2, seed=5)
        kept, _ = _consent_filter(sampled, snapshot)
        return {a.record.record_id: a.split for a in kept}

    before = version(everyone)
    after = version(everyone - {"P7", "P8"})
    removed = set(before) - set(after)
    assert removed and all(r.startswith(("P7-", "P8-")) for r in removed)
    assert not set(after) - set(before)
    assert all(before[r] == split for r, split in after.items())


def test_record_pattern_needs_patients() -> None:
    with pytest.raises(SamplingError, match="has no patient id"):
        assign_by_patient(SOURCE, fraction=0.5, val_split=0.1, test_split=0.1, seed=1)
