"""The reference sample's consent registry CSV, read strictly.

Columns: ``patient_id,scan_id,file_path,label,consent_status`` (``s3_key`` may replace
``file_path``). Every problem is reported with its line number, all of them at once, and
nothing is imported from a file that has any: a half-imported registry is worse than none.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from lineage.consent.events import ConsentError

COLUMNS = ("patient_id", "scan_id", "file_path", "label", "consent_status")  # as written
REQUIRED = ("patient_id", "scan_id", "label", "consent_status")
LOCATION_COLUMNS = ("file_path", "s3_key")
GRANTED = frozenset({"granted", "consented", "consent", "yes", "true", "active"})
WITHDRAWN = frozenset({"withdrawn", "revoked", "no", "false", "withdrew"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_SHOWN = 20


@dataclass(frozen=True)
class RegistryRow:
    line: int
    patient_id: str
    scan_id: str
    file_path: str
    label: str
    status: str  # granted | withdrawn


def _read_header(reader: csv.DictReader[str], name: str) -> tuple[list[str], str]:
    """The header's columns (stripped) and the location column; raise when one lacks."""
    fields = [f.strip() for f in reader.fieldnames or []]
    reader.fieldnames = fields
    missing = [c for c in REQUIRED if c not in fields]
    location = next((c for c in LOCATION_COLUMNS if c in fields), None)
    if missing or location is None:
        wanted = ", ".join([*missing, *([] if location else ["file_path or s3_key"])])
        raise ConsentError(
            f"{name} line 1: the header lacks {wanted}",
            "use the columns patient_id,scan_id,file_path,label,consent_status",
        )
    return fields, location


def _cell_problems(values: dict[str, str], location: str, line: int) -> tuple[list[str], str]:
    """One row's own problems, and its consent status ("" when the row cannot be used)."""
    bad = [c for c in (*REQUIRED, location) if not values.get(c)]
    if bad:
        return [f"line {line}: empty {', '.join(bad)}"], ""
    problems = [
        f"line {line}: {what} {value!r} has characters ids cannot have"
        for what, value in (("patient_id", values["patient_id"]), ("scan_id", values["scan_id"]))
        if not _ID.match(value)
    ]
    raw_status = values["consent_status"].lower()
    status = "granted" if raw_status in GRANTED else "withdrawn" if raw_status in WITHDRAWN else ""
    if not status:
        problems.append(
            f"line {line}: consent_status {values['consent_status']!r} is neither granted "
            "nor withdrawn"
        )
    return problems, status


def parse(text: str, name: str = "registry") -> list[RegistryRow]:
    reader = csv.DictReader(io.StringIO(text))
    fields, location = _read_header(reader, name)
    rows: list[RegistryRow] = []
    problems: list[str] = []
    seen_scans: dict[str, int] = {}
    patient_status: dict[str, tuple[str, int]] = {}
    for row in reader:
        line = reader.line_num
        if None in row:  # more cells than header columns
            problems.append(
                f"line {line}: {len(row[None]) + len(fields)} cells, header has {len(fields)}"
            )
            continue
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()):
            continue  # blank line
        own, status = _cell_problems(values, location, line)
        problems.extend(own)
        if not status:
            continue
        patient, scan = values["patient_id"], values["scan_id"]
        if scan in seen_scans:
            problems.append(f"line {line}: scan_id {scan} repeats line {seen_scans[scan]}")
            continue
        seen_scans[scan] = line
        earlier = patient_status.setdefault(patient, (status, line))
        if earlier[0] != status:
            problems.append(
                f"line {line}: {patient} is {status} here but {earlier[0]} on line {earlier[1]}"
            )
            continue
        rows.append(RegistryRow(line, patient, scan, values[location], values["label"], status))
    if problems:
        shown = "; ".join(problems[:MAX_SHOWN])
        more = f"; and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise ConsentError(
            f"{name}: {len(problems)} bad rows: {shown}{more}",
            "fix them and import again; nothing was imported",
        )
    if not rows:
        raise ConsentError(f"{name} has no rows", "nothing was imported")
    return rows


def read(path: Path) -> list[RegistryRow]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConsentError(f"{path} does not exist", "pass the registry CSV's path") from None
    except UnicodeDecodeError:
        raise ConsentError(
            f"{path} is not UTF-8 text", "export the registry as UTF-8 CSV"
        ) from None
    return parse(text, str(path))
