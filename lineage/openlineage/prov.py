"""A verified chain as a W3C PROV document (the `prov` library), and a picture of it.

Entities: the source, the dataset version (tag, commit, DVC md5, manifest sha256), its
records, the consent snapshot (record pattern), the model version (weights and model
digests), the endpoint when there is one. Activities: the processing run, the training run,
erasures (record pattern). Agents: the model-lineage software (its version and image).
Relations: used, wasGeneratedBy, wasDerivedFrom, wasAssociatedWith, wasInvalidatedBy.
Every relation on the main chain carries the result of the checks `trace` made on that link
(`lineage:checks`), which is what the picture writes on its edges.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prov.model import ProvDocument

NAMESPACE = "https://model-lineage.dev/ns#"
PREFIX = "lineage"

# which link of the chain each of trace's checks is about (a check not named here is
# reported on the model -> run link, the most general one)
LINK_OF_CHECK = {
    "tag": "run->data",
    "dvc pointer": "run->data",
    "dvc listing": "data->records",
    "manifest in remote": "data->records",
    "manifest artifact": "data->records",
    "record counts": "data->records",
    "erasures": "data->records",
}


@dataclass(frozen=True)
class ChainFacts:
    """Everything the export says, taken from a trace that passed and the run's record."""

    model_name: str
    model_version: str
    aliases: list[str]
    run_id: str
    run_started_ms: int
    run_ended_ms: int | None
    record: dict[str, Any]  # LineageRecord.to_json()
    data: dict[str, Any]  # trace's DataLink
    checks: list[dict[str, Any]]  # trace's checks: name, ok, detail
    processing_run_id: str | None = None
    processing_started_ms: int | None = None
    processing_ended_ms: int | None = None
    source: str = ""
    endpoint: str | None = None
    erasures: list[dict[str, Any]] = field(default_factory=list)  # request, erased_at, records


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def link_checks(checks: list[dict[str, Any]], link: str) -> str:
    """`ok: a, b; FAILED: c` for the checks of one link."""
    mine = [c for c in checks if LINK_OF_CHECK.get(str(c["name"]), _default(c)) == link]
    passed = [c["name"] for c in mine if c["ok"]]
    failed = [c["name"] for c in mine if not c["ok"]]
    parts = []
    if passed:
        parts.append("ok: " + ", ".join(passed))
    if failed:
        parts.append("FAILED: " + ", ".join(failed))
    return "; ".join(parts) or "not checked"


def _default(check: dict[str, Any]) -> str:
    name = str(check["name"])
    if name.startswith("endpoint"):
        return "endpoint->model"
    if name.startswith("consent"):
        return "records->consent"
    return "model->run"


def _link(checks: list[dict[str, Any]], link: str) -> dict[str, str]:
    """The attributes a relation on the chain carries: which link it is, what was checked."""
    return {f"{PREFIX}:link": link, f"{PREFIX}:checks": link_checks(checks, link)}


def build(
    chain: ChainFacts,
) -> ProvDocument:  # long: the PROV document's records in chain order, one place
    doc = ProvDocument()
    doc.add_namespace(PREFIX, NAMESPACE)
    rec, data = chain.record, chain.data
    q = f"{PREFIX}:"

    software = doc.agent(
        f"{q}software/model-lineage-{rec.get('code_version', 'unknown')}",
        {
            "prov:type": "prov:SoftwareAgent",
            f"{q}image_uri": rec.get("image_uri") or "local process",
            f"{q}image_digest": rec.get("image_digest") or "",
        },
    )
    source = doc.entity(f"{q}source/{chain.source or 'unknown'}", {f"{q}kind": "source"})
    dataset = doc.entity(
        f"{q}dataset/{data['tag']}",
        {
            "prov:type": f"{q}DatasetVersion",
            f"{q}repository": data["repo_url"],
            f"{q}tag": data["tag"],
            f"{q}commit": data["commit"],
            f"{q}dataset_md5": data["dataset_md5"],
            f"{q}manifest_sha256": data["manifest_sha256"],
            f"{q}files": int(data["nfiles"]),
        },
    )
    records = doc.entity(
        f"{q}records/{data['tag']}",
        {
            "prov:type": f"{q}Records",
            **{f"{q}records_{split}": int(n) for split, n in data["records"].items()},
        },
    )
    model = doc.entity(
        f"{q}model/{chain.model_name}/{chain.model_version}",
        {
            "prov:type": f"{q}ModelVersion",
            f"{q}weights_sha256": rec.get("weights_sha256", ""),
            f"{q}model_sha256": rec.get("model_sha256", ""),
            f"{q}onnx_sha256": rec.get("onnx_sha256", ""),
            f"{q}aliases": ",".join(chain.aliases),
        },
    )
    training = doc.activity(
        f"{q}run/{chain.run_id}",
        _time(chain.run_started_ms),
        _time(chain.run_ended_ms),
        {
            "prov:type": f"{q}Training",
            f"{q}training_job_name": rec.get("training_job_name") or "",
            f"{q}world_size": int(rec.get("world_size") or 1),
        },
    )
    processing = doc.activity(
        f"{q}processing/{chain.processing_run_id or data['tag']}",
        _time(chain.processing_started_ms),
        _time(chain.processing_ended_ms),
        {"prov:type": f"{q}Processing"},
    )

    checks = chain.checks
    doc.used(processing, source)
    doc.wasGeneratedBy(dataset, processing)
    doc.wasDerivedFrom(dataset, source)
    doc.wasDerivedFrom(records, dataset, other_attributes=_link(checks, "data->records"))
    doc.used(training, dataset, other_attributes=_link(checks, "run->data"))
    doc.wasGeneratedBy(model, training, other_attributes=_link(checks, "model->run"))
    doc.wasDerivedFrom(model, dataset)
    doc.wasAssociatedWith(training, software)
    doc.wasAssociatedWith(processing, software)

    if rec.get("pattern") == "record":
        consent = doc.entity(
            f"{q}consent/{rec.get('consent_snapshot_sha256', '')}",
            {
                "prov:type": f"{q}ConsentSnapshot",
                f"{q}as_of": rec.get("consent_as_of", ""),
                f"{q}head_seq": str(rec.get("consent_head_seq", "")),
                f"{q}head_hash": rec.get("consent_head_hash", ""),
                f"{q}patients": int(rec.get("patient_count") or 0),
            },
        )
        doc.used(processing, consent)
        doc.wasDerivedFrom(records, consent, other_attributes=_link(checks, "records->consent"))
    for erasure in chain.erasures:
        erased = doc.activity(
            f"{q}erasure/{erasure['request']}",
            None,
            None,
            {"prov:type": f"{q}Erasure", f"{q}records": int(erasure.get("records", 0))},
        )
        doc.wasInvalidatedBy(records, erased)
    if chain.endpoint:
        endpoint = doc.entity(f"{q}endpoint/{chain.endpoint}", {"prov:type": f"{q}Endpoint"})
        doc.wasDerivedFrom(endpoint, model, other_attributes=_link(checks, "endpoint->model"))
    return doc


def serialize(doc: ProvDocument, fmt: str) -> str:
    if fmt == "prov-json":
        return str(doc.serialize(format="json", indent=2))
    if fmt == "prov-n":
        return str(doc.get_provn())
    raise ValueError(fmt)


# -- the picture ----------------------------------------------------------------------------

_ORDER = ("Endpoint", "ModelVersion", "Training", "DatasetVersion", "Records", "ConsentSnapshot")
_LABEL = {
    "Endpoint": "endpoint",
    "ModelVersion": "registered version",
    "Training": "training run",
    "DatasetVersion": "dataset version",
    "Records": "records",
    "ConsentSnapshot": "consent snapshot",
}


_EDGE = {
    ("Endpoint", "ModelVersion"): "endpoint->model",
    ("ModelVersion", "Training"): "model->run",
    ("Training", "DatasetVersion"): "run->data",
    ("DatasetVersion", "Records"): "data->records",
    ("Records", "ConsentSnapshot"): "records->consent",
}


def chain_svg(doc: ProvDocument) -> str:
    """The chain left to right (endpoint -> version -> run -> dataset version -> records ->
    consent), each edge labelled with its checks; drawn from the PROV document itself, as
    self-contained SVG (no Graphviz needed)."""
    nodes: dict[str, tuple[str, str]] = {}  # kind -> (identifier, short name)
    for record in doc.get_records():
        kinds = [str(v).split(":")[-1] for v in record.get_asserted_types()]
        for kind in kinds:
            if kind in _ORDER and kind not in nodes:
                nodes[kind] = (str(record.identifier), str(record.identifier).split("/", 1)[-1])
    labels: dict[str, str] = {}  # link -> its checks
    for relation in doc.get_records():
        extra = {str(k).split(":")[-1]: str(v) for k, v in relation.attributes}
        if "link" in extra and "checks" in extra:
            labels[extra["link"]] = extra["checks"]
    order = [kind for kind in _ORDER if kind in nodes]
    box_w, box_h, gap, top = 190, 64, 120, 40
    width = len(order) * box_w + (len(order) - 1) * gap + 40
    height = top + box_h + 110
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" '
        'role="img" aria-label="lineage chain">',
        '<defs><marker id="arrow" markerWidth="10" markerHeight="10" refX="9" refY="3" '
        'orient="auto"><path d="M0,0 L9,3 L0,6 z" fill="#444"/></marker></defs>',
    ]
    for i, kind in enumerate(order):
        x = 20 + i * (box_w + gap)
        _, short = nodes[kind]
        parts.append(
            f'<rect x="{x}" y="{top}" width="{box_w}" height="{box_h}" rx="8" '
            'fill="#f4f6fb" stroke="#3b5998"/>'
        )
        parts.append(
            f'<text x="{x + box_w / 2}" y="{top + 24}" text-anchor="middle" '
            f'font-weight="bold">{html.escape(_LABEL[kind])}</text>'
        )
        parts.append(
            f'<text x="{x + box_w / 2}" y="{top + 44}" text-anchor="middle">'
            f"{html.escape(_shorten(short, 28))}</text>"
        )
        if i == 0:
            continue
        label = labels.get(_EDGE.get((order[i - 1], kind), ""), "")
        failed = "FAILED" in label
        x0 = x - gap
        colour = "#b00020" if failed else "#2e7d32"
        parts.append(
            f'<line x1="{x0}" y1="{top + box_h / 2}" x2="{x - 2}" y2="{top + box_h / 2}" '
            f'stroke="{colour}" stroke-width="2" marker-end="url(#arrow)"/>'
        )
        for j, line in enumerate(_wrap(label or "not checked", 22)[:5]):
            parts.append(
                f'<text x="{x0 + gap / 2}" y="{top + box_h + 18 + 14 * j}" '
                f'text-anchor="middle" fill="{colour}">{html.escape(line)}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines
