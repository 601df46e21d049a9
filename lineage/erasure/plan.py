"""Where a patient's data was copied: the plan an erasure executes (and `--dry-run` prints).

Every dataset version on the git server is read (each repository's tags, each tag's `.dvc`
pointer, the `.dir` listing and the manifest in the DVC remote), so a version nobody trained
on is found too. A patient's record names its file; the listing names the object holding its
bytes (by md5). An object another patient's record also uses (identical bytes) is kept and
reported, never deleted; the same patient's copy in a version no registry filtered is the
patient's too, and is erased with the rest. Models trained on the patient's data, their
aliases and running endpoints come from the audits (`lineage.audit.queries.impact`, passed
in by the caller: the audits read the erasure log, so the erasure sits below them). Local
copies are found by content under `LINEAGE_HOME` (job directories and their DVC caches).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from botocore.exceptions import ClientError

from lineage import manifest
from lineage.config import Settings
from lineage.consent.store import ConsentStore
from lineage.dvcremote import DvcRemote
from lineage.erasure.examples import CarryingModel, models_carrying
from lineage.erasure.log import ErasureLog
from lineage.errors import LineageError
from lineage.gitops import dvc_out_md5_from_text, git
from lineage.manifest import ManifestRow
from lineage.storage import s3_client


class ErasureError(LineageError):
    """An erasure cannot be planned or carried out as asked."""


class AffectedModel(Protocol):
    @property
    def model(self) -> str: ...  # NAME/VERSION


class Affected(Protocol):
    """What the audits say a patient's data reached (`lineage.audit.queries.Impact`)."""

    @property
    def models(self) -> Sequence[AffectedModel]: ...

    @property
    def aliases(self) -> list[str]: ...

    @property
    def endpoints(self) -> list[dict[str, str]]: ...


class ImpactOf(Protocol):
    """The audits' impact of a patient, as the caller chose to ask it (which runtime's
    endpoints count): e.g. ``functools.partial(impact, settings, endpoints=running_endpoints)``."""

    def __call__(self, patient_id: str, /) -> Affected: ...


@dataclass(frozen=True)
class DatasetVersion:
    repo: str
    tag: str
    commit: str
    dataset_md5: str
    remote_url: str

    def to_json(self) -> dict[str, str]:
        return {"repo": self.repo, "tag": self.tag, "dataset_md5": self.dataset_md5}


@dataclass
class PlannedObject:
    """One object of the DVC remote that holds one of the patient's records."""

    md5: str
    sha256: str
    record_id: str
    scan_id: str
    file_path: str
    remote_url: str
    datasets: list[DatasetVersion] = field(default_factory=list)
    shared_with: int = 0  # other patients' records with the same bytes (then it is kept)
    present: bool = True  # in the remote now (a rerun after a crash finds some gone)

    def to_json(self) -> dict[str, Any]:
        return {
            "md5": self.md5,
            "sha256": self.sha256,
            "record_id": self.record_id,
            "scan_id": self.scan_id,
            "file_path": self.file_path,
            "remote": self.remote_url,
            "datasets": [d.to_json() for d in self.datasets],
            "shared_with_other_records": self.shared_with,
            "present": self.present,
        }


@dataclass
class ErasurePlan:
    patient_id: str
    withdrawn_at: str
    datasets: list[DatasetVersion]
    objects: list[PlannedObject]  # to delete
    kept: list[PlannedObject]  # shared with another patient's record
    already_erased: list[str]  # md5s erased by an earlier request
    impact: Affected
    local_files: list[Path]
    unreadable: list[str] = field(default_factory=list)  # other registries' broken versions
    # erased earlier, yet in the remote again (pushed back by a run): deleted again by a
    # follow-up of the earlier requests
    returned: list[PlannedObject] = field(default_factory=list)
    follow_up_of: list[str] = field(default_factory=list)  # the patient's earlier requests
    # versions registered before examples were synthetic: the patient's pixels in their files
    carrying: list[CarryingModel] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "withdrawn_at": self.withdrawn_at,
            "datasets": [d.to_json() for d in self.datasets],
            "objects": [o.to_json() for o in self.objects],
            "kept": [o.to_json() for o in self.kept],
            "already_erased": self.already_erased,
            "models": [h.model for h in self.impact.models],
            "aliases": self.impact.aliases,
            "endpoints": self.impact.endpoints,
            "local_files": [str(p) for p in self.local_files],
            "unreadable_other_datasets": self.unreadable,
            "returned": [o.to_json() for o in self.returned],
            "follow_up_of": self.follow_up_of,
            "models_carrying_pixels": [c.to_json() for c in self.carrying],
        }


def plan_erasure(settings: Settings, patient_id: str, *, impact_of: ImpactOf) -> ErasurePlan:
    """Everything that holds the patient's data, after checking the erasure is allowed."""
    consent = ConsentStore.from_settings(settings)
    status = consent.status(patient_id)
    if status.status != "withdrawn":
        raise ErasureError(
            f"{patient_id} consents ({status.status} since {status.since}): erasure is refused",
            f"record the withdrawal first: `lineage consent withdraw {patient_id} --reason ...`",
        )
    erasure_log = ErasureLog.from_settings(settings)
    erased = erasure_log.erased()
    governed = {event.hash for event in consent.events()}
    s3 = s3_client(settings)
    datasets, unreadable = _dataset_versions(settings, s3, governed)
    planned, users = _patients_objects(datasets, patient_id, governed)
    remote_cache: dict[str, DvcRemote] = {}
    to_delete: list[PlannedObject] = []
    kept: list[PlannedObject] = []
    already: list[str] = []
    returned: list[PlannedObject] = []
    for key, item in sorted(planned.items()):
        remote = remote_cache.setdefault(item.remote_url, DvcRemote(s3, item.remote_url))
        item.present = _exists(remote, item.md5)
        if item.md5 in erased:
            already.append(item.md5)
            if item.present:  # erased, and back: every copy is checked again, every time
                returned.append(item)
            continue
        item.shared_with = len(users[key] - {"self"})
        (kept if item.shared_with else to_delete).append(item)
    earlier = [event.request for event in erasure_log.of_patient(patient_id)]
    impact = impact_of(patient_id)
    images = {
        item.md5: data
        for item in [*to_delete, *kept, *returned]
        if item.present and (data := remote_cache[item.remote_url].read(item.md5)) is not None
    }
    carrying = models_carrying(settings, [h.model for h in impact.models], images)
    return ErasurePlan(
        patient_id=patient_id,
        withdrawn_at=status.since,
        datasets=sorted(
            {v for item in planned.values() for v in item.datasets},
            key=lambda v: (v.repo, v.tag),
        ),
        objects=to_delete,
        kept=kept,
        already_erased=already,
        impact=impact,
        local_files=local_copies(settings.home, to_delete),
        unreadable=unreadable,
        returned=returned,
        follow_up_of=list(dict.fromkeys(earlier)),
        carrying=carrying,
    )


def _patients_objects(
    datasets: list[_Dataset], patient_id: str, governed: set[str]
) -> tuple[dict[tuple[str, str], PlannedObject], dict[tuple[str, str], set[str]]]:
    """The patient's objects (by remote and md5, with every version listing them), and who
    uses each object: the patient ("self") or another record, in any dataset and pattern."""
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    planned: dict[tuple[str, str], PlannedObject] = {}
    for found in datasets:
        # patient ids mean something in one registry: ours, or a version no registry filtered
        # (a legacy `--pattern dataset` publish of a patient source), whose same patient's copy
        # is erased too; another registry's record with the same bytes is another person's
        ours = found.consent_head in governed or not found.consent_head
        for row in found.rows:
            md5 = found.listing.get(row.file_path)
            if md5 is None:
                continue
            key = (found.remote_url, md5)
            mine = ours and row.patient_id == patient_id
            users[key].add("self" if mine else f"{found.dataset_md5}:{row.record_id}")
            if not mine:
                continue
            item = planned.setdefault(
                key,
                PlannedObject(
                    md5, row.sha256, row.record_id, row.scan_id, row.file_path, found.remote_url
                ),
            )
            item.datasets.extend(v for v in found.versions if v not in item.datasets)
    return planned, users


def _exists(remote: DvcRemote, md5: str) -> bool:
    try:
        remote.client.head_object(Bucket=remote.bucket, Key=remote.key(md5))
    except ClientError:  # 404: absent (a crashed earlier run deleted it)
        return False
    return True


@dataclass
class _Dataset:
    """One dataset (a DVC directory) and every version (tag) of it on the git server."""

    dataset_md5: str
    remote_url: str
    pattern: str
    consent_head: str  # the consent-log head its snapshot was taken at (record pattern)
    versions: list[DatasetVersion]
    listing: dict[str, str]  # relpath -> object md5
    rows: list[ManifestRow]


def _dataset_versions(
    settings: Settings, s3: Any, governed: set[str]
) -> tuple[list[_Dataset], list[str]]:
    """Every dataset on the git server, each read once however many tags name it; and the
    versions that could not be read. One of ours (filtered by this registry) that cannot be
    read stops the erasure: it may hold the patient. Another's is reported and skipped."""
    found: dict[tuple[str, str], _Dataset] = {}
    unreadable: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lineage-erase-") as tmp:
        for repo in _repositories(settings):
            local = Path(tmp) / f"{repo}.git"
            git("clone", "--bare", "--quiet", settings.repo_url(repo), str(local), cwd=Path(tmp))
            refs = git(
                "for-each-ref",
                "refs/tags",
                "--format=%(refname:short)|%(*objectname)|%(objectname)",
                cwd=local,
            ).stdout.splitlines()
            for line in refs:
                tag, peeled, direct = line.split("|")
                commit = peeled or direct  # an annotated tag peels to its commit
                md5 = dvc_out_md5_from_text(_show(local, commit, manifest.DVC_FILE) or "")
                if md5 is None:
                    continue
                meta = json.loads(_show(local, commit, manifest.DATASET_METADATA) or "{}")
                remote_url = _default_remote(_show(local, commit, ".dvc/config") or "")
                key = (remote_url, md5)
                head = str(meta.get("consent_head_hash", ""))
                if key not in found:
                    try:
                        listing, rows = _contents(DvcRemote(s3, remote_url), md5)
                    except LineageError as exc:
                        if head in governed:
                            raise
                        unreadable.append(f"{repo}@{tag}: {exc.message}")
                        continue
                    pattern = str(meta.get("pattern", "dataset"))
                    found[key] = _Dataset(md5, remote_url, pattern, head, [], listing, rows)
                found[key].versions.append(DatasetVersion(repo, tag, commit, md5, remote_url))
    return list(found.values()), unreadable


def _contents(remote: DvcRemote, dataset_md5: str) -> tuple[dict[str, str], list[ManifestRow]]:
    try:
        listing = {e.relpath: e.md5 for e in remote.listing(dataset_md5)}
    except LineageError as exc:
        raise ErasureError(
            f"the dataset {dataset_md5} cannot be read to plan the erasure: {exc.message}",
            "an erasure must see every copy: restore the listing or the remote, then retry",
        ) from None
    manifest_md5 = listing.get(manifest.MANIFEST_NAME)
    data = remote.read(manifest_md5) if manifest_md5 else None
    if data is None:
        raise ErasureError(
            f"the manifest of dataset {dataset_md5} is missing from the remote",
            "without it the patient's records in this version cannot be found; restore it",
        )
    return listing, manifest.parse(data.decode("utf-8"), f"manifest of {dataset_md5}")


def _show(repo: Path, commit: str, path: str) -> str | None:
    shown = git("show", f"{commit}:{path}", cwd=repo, check=False)
    return shown.stdout if shown.returncode == 0 else None


def _default_remote(config_text: str) -> str:
    parser = configparser.ConfigParser()
    parser.read_string(config_text)
    name = parser.get("core", "remote", fallback=None)
    return parser.get(f"'remote \"{name}\"'", "url", fallback="") if name else ""


def _repositories(settings: Settings) -> list[str]:
    try:
        response = httpx.get(
            f"{settings.git_url}/api/repos",
            auth=("lineage", settings.credentials.git_token),
            timeout=30,
        )
    except httpx.HTTPError:
        raise ErasureError(
            f"the git server at {settings.git_url} is not reachable",
            "start the stack (`lineage stack up`): an erasure must see every dataset version",
        ) from None
    if not response.is_success:
        raise ErasureError(f"the git server answered {response.status_code} listing repositories")
    return [str(name) for name in response.json()["repos"]]


def local_copies(home: Path, objects: list[PlannedObject]) -> list[Path]:
    """Copies of the objects under `home/jobs`: each job's dataset checkouts (at the record's
    path) and DVC caches (at the object's md5 path), confirmed by hashing before they count."""
    jobs = home / "jobs"
    if not objects or not jobs.is_dir():
        return []
    wanted = {o.md5 for o in objects}
    candidates: set[Path] = set()
    for dataset in jobs.rglob(manifest.DATASET_DIR):
        if dataset.is_dir() and not dataset.is_symlink():
            candidates.update(dataset / o.file_path for o in objects)
    for cache in jobs.rglob(".dvc"):
        if cache.is_dir() and not cache.is_symlink():
            base = cache / "cache" / "files" / "md5"
            candidates.update(base / o.md5[:2] / o.md5[2:] for o in objects)
    found = []
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            if digest in wanted:
                found.append(path)
    return sorted(found)
