"""`lineage erase`: delete a withdrawn patient's images from every copy, keep the lineage.

Order, for a crash at the worst moment: the objects are deleted first, then the erasure is
recorded (tombstones). A crash in between leaves objects missing without tombstones: `verify`
then fails closed (nothing looks intact that is not), and running the same `erase` again
finds them absent, tombstones them and completes. Models trained on the data are listed,
never deleted: what to retrain or retire is the operator's decision, and the report says it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lineage.config import Settings
from lineage.consent.events import utc_now
from lineage.credentials import private_dir
from lineage.dvcremote import DvcRemote
from lineage.erasure.disk import DiskCheck, EmbeddedStore, purge_versions
from lineage.erasure.evidence import write_evidence
from lineage.erasure.log import ErasureEvent, ErasureLog, Tombstone
from lineage.erasure.plan import ErasureError, ErasurePlan, ImpactOf, PlannedObject, plan_erasure
from lineage.storage import s3_client


@dataclass(frozen=True)
class Erasure:
    request: str
    actor: str
    plan: ErasurePlan
    dry_run: bool
    event: ErasureEvent | None
    deleted_objects: list[str]
    deleted_files: list[str]
    started_at: str
    finished_at: str
    evidence: dict[str, str]
    # per object (md5): how its absence was checked, where (store API, versions, disk)
    absence: dict[str, dict[str, str]]

    @property
    def elapsed_since_withdrawal_s(self) -> float:
        """From the withdrawal to the erasure's completion (what a regulator asks)."""
        elapsed = _moment(self.finished_at) - _moment(self.plan.withdrawn_at)
        return round(elapsed.total_seconds(), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.plan.patient_id,
            "request": self.request,
            "actor": self.actor,
            "dry_run": self.dry_run,
            "plan": self.plan.to_json(),
            "event": None if self.event is None else self.event.to_json(),
            "deleted_objects": self.deleted_objects,
            "deleted_files": self.deleted_files,
            "absence": self.absence,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_since_withdrawal_s": self.elapsed_since_withdrawal_s,
            "to_retrain_or_retire": [h.model for h in self.plan.impact.models],
            # a repeat erasure of the patient: it re-checked every copy under these requests
            "follow_up_of": self.plan.follow_up_of,
            # erased earlier and pushed back since: deleted again by this run (or it failed)
            "returned_objects_deleted": [o.md5 for o in self.plan.returned],
            "evidence": self.evidence,
        }


def erase(
    settings: Settings,
    patient_id: str,
    *,
    request: str,
    actor: str,
    impact_of: ImpactOf,
    dry_run: bool = False,
    out_dir: Path | None = None,
) -> Erasure:
    if not request.strip() or not actor.strip():
        raise ErasureError(
            "an erasure needs a request reference and an actor",
            "pass --request (e.g. the ticket of the patient's request) and --actor",
        )
    started = utc_now()
    plan = plan_erasure(settings, patient_id, impact_of=impact_of)
    if dry_run:
        return Erasure(request, actor, plan, True, None, [], [], started, utc_now(), {}, {})
    s3 = s3_client(settings)
    targets = [*plan.objects, *plan.returned]
    remotes = {item.remote_url: DvcRemote(s3, item.remote_url) for item in targets}
    disk = DiskCheck.prepare(EmbeddedStore.of(settings), targets, remotes)
    deleted = [_delete(remotes[item.remote_url], item) for item in targets]
    absence = {item.md5: _api_absence(item, remotes[item.remote_url]) for item in targets}
    absence = disk.finish(absence)
    files = []
    for path in plan.local_files:
        path.unlink(missing_ok=True)
        files.append(str(path))
    event = ErasureLog.from_settings(settings).record(
        patient_id, request=request, actor=actor, tombstones=[_tombstone(o) for o in plan.objects]
    )
    finished = utc_now()
    result = Erasure(
        request,
        actor,
        plan,
        False,
        event,
        [d for d in deleted if d],
        files,
        started,
        finished,
        {},
        absence,
    )
    directory = out_dir or private_dir(settings.home / "erasures")
    evidence = write_evidence(result.to_json(), directory / f"erasure-{event.seq:05d}")
    evidence["decision"] = str(sign_erasure(settings, event, Path(evidence["json"])))
    return replace(result, evidence=evidence)


def sign_erasure(settings: Settings, event: ErasureEvent, evidence_json: Path) -> Path:
    """The erasure as a signed `erase` decision (its evidence file and log event by their
    digests), in the transparency log, beside the evidence (`.dsse.json`)."""
    from lineage.attest.host import Evidence
    from lineage.credentials import write_private
    from lineage.hashing import file_sha256

    envelope = Evidence(settings).decide(
        "erase",
        [
            {"name": evidence_json.name, "digest": {"sha256": file_sha256(evidence_json)}},
            {"name": f"erasure-event:{event.seq}", "digest": {"sha256": event.hash}},
        ],
        {
            "request": event.request,
            "actor": event.actor,
            "patient_key": event.patient_key,
            "tombstones": len(event.tombstones),
        },
    )
    path = evidence_json.with_suffix(".dsse.json")
    write_private(path, envelope.dumps())
    return path


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _delete(remote: DvcRemote, item: PlannedObject) -> str:
    """Delete one object and confirm it is gone; an object already absent (a crashed earlier
    run) is fine. Returns its URL when this run deleted it."""
    if not item.present:
        return ""
    try:
        remote.client.delete_object(Bucket=remote.bucket, Key=remote.key(item.md5))
        deadline = time.monotonic() + 30
        while _still_there(remote, item.md5):
            if time.monotonic() > deadline:
                raise ErasureError(f"{remote.object_url(item.md5)} is still there after delete")
            time.sleep(0.2)
    except (BotoCoreError, ClientError) as exc:
        raise ErasureError(
            f"deleting {remote.object_url(item.md5)} ({item.file_path}) failed: {exc}",
            "nothing was recorded yet; fix the S3 store and run the same `lineage erase` again",
        ) from None
    return remote.object_url(item.md5)


def _api_absence(item: PlannedObject, remote: DvcRemote) -> dict[str, str]:
    versions = purge_versions(remote.client, remote.bucket, remote.key(item.md5))
    return {
        "store_api": (
            "deleted; HEAD answers 404"
            if item.present
            else "already absent (an earlier, interrupted run deleted it); HEAD answers 404"
        ),
        "versions": f"{versions} versions and delete markers removed; none left listed",
    }


def _still_there(remote: DvcRemote, md5: str) -> bool:
    try:
        remote.client.head_object(Bucket=remote.bucket, Key=remote.key(md5))
    except ClientError:
        return False
    return True


def _tombstone(item: PlannedObject) -> Tombstone:
    return Tombstone(
        record_id=item.record_id,
        scan_id=item.scan_id,
        file_path=item.file_path,
        md5=item.md5,
        sha256=item.sha256,
        datasets=[d.to_json() for d in item.datasets],
    )
