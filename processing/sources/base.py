"""What a data source gives the processing job: records with a label and a way to load them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class SourceRecord:
    """One image of a source. `official_split` is "test" for a source's own held-out set
    (CIFAR-10's test batch), "train" for the rest, None when the source has no split.
    `patient_id`/`scan_id` are set by sources that know whose record it is (synthetic-cxr,
    cxr): the record pattern splits and filters by patient."""

    record_id: str
    label: str
    load: Callable[[], Image.Image]
    official_split: str | None = None
    patient_id: str | None = None  # sources with patients (the record pattern)
    scan_id: str | None = None


class SourceError(Exception):
    """A source cannot be read; the message says which file and what to do."""
