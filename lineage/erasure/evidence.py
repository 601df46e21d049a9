"""The evidence an erasure leaves: one JSON record and one self-contained HTML page (0600).

What a data-protection officer files: the request, who carried it out and when, the plan
(every dataset version, object and scan that held the patient; every model, alias and
endpoint trained on them), what was deleted with its hashes, what was kept and why, and the
time from the withdrawal to completion, and for each object how its absence was checked
(the store's API, its versions, its disk). The patient appears only as the keyed hash the
erasure log stores; the page never shows the identifier.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from lineage.credentials import write_private


def write_evidence(record: dict[str, Any], stem: Path) -> dict[str, str]:
    """Write `<stem>.json` and `<stem>.html`; their paths."""
    shown = _without_identifier(record)
    json_path, html_path = stem.with_suffix(".json"), stem.with_suffix(".html")
    write_private(json_path, json.dumps(shown, indent=2, default=str) + "\n")
    write_private(html_path, render(shown))
    return {"json": str(json_path), "html": str(html_path)}


def _without_identifier(record: dict[str, Any]) -> dict[str, Any]:
    event = record.get("event") or {}
    plan = dict(record["plan"])
    plan.pop("patient_id", None)
    return {
        **{k: v for k, v in record.items() if k not in ("patient_id", "plan")},
        "patient_key": event.get("patient_key"),
        "plan": plan,
    }


def render(record: dict[str, Any]) -> str:
    esc, table = html.escape, _table
    plan = record["plan"]
    event = record.get("event") or {}
    deleted, kept, returned = _object_rows(record)
    models = [[m] for m in record.get("to_retrain_or_retire", [])]
    carrying = [
        [c["model"], ", ".join(c["files"]), str(len(c["scans"]))]
        for c in plan.get("models_carrying_pixels", [])
    ]
    follow_up = _follow_up(record.get("follow_up_of") or [])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Erasure {esc(str(event.get("seq", "")))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;font-size:.9em}}</style></head><body>
<h1>Erasure under request {esc(record["request"])}</h1>
<p>Carried out by <b>{esc(record["actor"])}</b>, finished {esc(record["finished_at"])};
{esc(str(record["elapsed_since_withdrawal_s"]))} s after the withdrawal recorded at
{esc(plan["withdrawn_at"])}. Patient (keyed hash): <code>{esc(str(record["patient_key"]))}</code>.
Erasure log event {esc(str(event.get("seq")))}, hash <code>{esc(str(event.get("hash")))}</code>.</p>
{follow_up}
<h2>Deleted from the DVC remote ({len(deleted)} objects)</h2>
{table(deleted, ["scan", "file", "md5", "sha256", "dataset versions", "absence checked"])}
<h2>Erased earlier, found back and deleted again ({len(returned)} objects)</h2>
{table(returned, ["scan", "md5", "dataset versions", "absence checked"])}
<h2>Kept ({len(kept)} objects)</h2>
{table(kept, ["scan", "md5", "why"])}
<h2>Local copies deleted ({len(record["deleted_files"])})</h2>
{table([[f] for f in record["deleted_files"]], ["file"])}
<h2>Models trained on the patient's data: retrain or retire ({len(models)})</h2>
{table(models, ["model version"])}
<h2>Models whose own files hold the patient's pixels: re-register or retire
({len(carrying)})</h2>
<p>Registered before input examples were synthetic, these versions carry the patient's images
(as the network sees them) in their example files, inside every copy of the model; their
digest and signature cover those files, so they are named here, not edited.</p>
{table(carrying, ["model version", "files", "images of the patient"])}
<p>Aliases: {esc(", ".join(plan["aliases"]) or "none")}. Running endpoints:
{esc(", ".join(e["url"] for e in plan["endpoints"]) or "none")}.
Nothing is claimed about what the weights memorised: models are retrained, not unlearned.</p>
<p>Every dataset version that held the patient still verifies: <code>lineage verify --tag
TAG</code> reports the erased records by this request and checks every other byte.</p>
</body></html>
"""


def _follow_up(earlier: list[str]) -> str:
    """The line a repeat erasure's page opens with: whose follow-up it is."""
    if not earlier:
        return ""
    return (
        f"<p><b>Follow-up of {html.escape(', '.join(earlier))}</b>: the patient was erased "
        "before; this run checked every copy again and deleted what had come back.</p>"
    )


def _table(rows: list[list[str]], head: list[str]) -> str:
    esc = html.escape
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{header}</tr>{body}</table>" if rows else "<p>none</p>"


def _object_rows(record: dict[str, Any]) -> tuple[list[list[str]], ...]:
    """The rows of the deleted, kept and returned objects, each deleted one with how its
    absence was checked."""
    plan, absence = record["plan"], record.get("absence") or {}

    def checked(md5: str) -> str:
        return "; ".join(f"{where}: {how}" for where, how in absence.get(md5, {}).items())

    def tags(o: dict[str, Any]) -> str:
        return ", ".join(d["tag"] for d in o["datasets"])

    deleted = [
        [o["scan_id"], o["file_path"], o["md5"], o["sha256"][:16] + "…", tags(o), checked(o["md5"])]
        for o in plan["objects"]
    ]
    kept = [
        [o["scan_id"], o["md5"], f"same bytes as {o['shared_with_other_records']} other record(s)"]
        for o in plan["kept"]
    ]
    returned = [
        [o["scan_id"], o["md5"], tags(o), checked(o["md5"])] for o in plan.get("returned", [])
    ]
    return deleted, kept, returned
