"""Record-level audits at scale: the lineage index against a full scan of MLflow, one run.

    python benchmarks/audit_scale.py [--models 200] [--datasets 20] [--records 100000]

Starts a private stack (temp home, free ports), registers `--models` model versions (10
registered models) whose runs log synthetic record-pattern manifests (`--datasets` nested
dataset versions of `--records` records each, as the training job logs them), builds the
index, then times `audit record` and `impact` for one patient who is in every dataset:
answered from the index (median of repeats, in process: imports excluded) and by a full scan
of the MLflow artifacts (the same functions with scan=True). Goal: indexed under 100 ms and at
least 100x faster than the scan. Prints JSON last.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lineage.audit.queries import audit_record, impact
from lineage.config import Settings
from lineage.index.store import LineageIndex
from lineage.manifest import RECORD_COLUMNS, SPLITS
from lineage.ops.deploy import running_endpoints
from lineage.registry import mlflow_client
from local.stack import LocalStack
from tests.conftest import stack_env

MODEL_NAMES = 10


def manifest(index: int, records: int) -> bytes:
    """Dataset version `index`: `records` scans of records/2 patients; each version drops a
    different 1% of patients (withdrawals), so every dataset differs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    patients = records // 2
    for scan in range(records):
        patient = scan % patients
        if patient % 100 == index % 100 and patient != 0:  # patient 0 is in every version
            continue
        split = SPLITS[patient % 10 // 8] if patient % 10 < 9 else "test"
        label = "tuberculosis" if patient % 3 == 0 else "normal"
        scan_id = f"PAT-{patient:06d}-SCAN-{scan:07d}"
        writer.writerow(
            (
                f"PAT-{patient:06d}",
                scan_id,
                scan_id,
                f"{split}/{label}/{scan_id}.png",
                split,
                label,
                hashlib.sha256(scan_id.encode()).hexdigest(),
            )
        )
    return buffer.getvalue().encode()


def populate(settings: Settings, models: int, datasets: int, records: int) -> float:
    import mlflow
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    client = MlflowClient(settings.mlflow_uri)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    experiment = client.create_experiment("audit-scale")
    manifests = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in range(datasets):
            data = manifest(d, records)
            path = Path(tmp) / str(d) / "manifest.csv"
            path.parent.mkdir()
            path.write_bytes(data)
            manifests.append((path, hashlib.sha256(data).hexdigest()))
        for name in range(MODEL_NAMES):
            client.create_registered_model(f"cxr-{name}")
        for m in range(models):
            path, digest = manifests[m % datasets]
            run = client.create_run(experiment, tags={"lineage.stage": "training"})
            run_id = run.info.run_id
            for key, value in {
                "dvc_tag": f"v{m % datasets}",
                "data_git_commit_id": f"{m % datasets:040d}",
                "dataset_md5": f"{m % datasets:032d}.dir",
                "manifest_sha256": digest,
                "dvc_repo_url": "http://git/datasets.git",
                "pattern": "record",
                "consent_snapshot_sha256": "0" * 64,
                "consent_as_of": "2026-11-01T00:00:00.000000Z",
            }.items():
                client.log_param(run_id, key, value)
            client.log_artifact(run_id, str(path))
            client.set_terminated(run_id)
            client.create_model_version(f"cxr-{m % MODEL_NAMES}", f"runs:/{run_id}/model", run_id)
            if m % 20 == 19:
                print(f"  {m + 1} model versions", file=sys.stderr, flush=True)
    return time.monotonic() - started


def timed(action, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--datasets", type=int, default=20)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # stdout is for the JSON
    home = Path(tempfile.mkdtemp(prefix="lineage-audit-scale-"))
    os.environ.update(stack_env(home / "lineage-home"))
    settings = Settings.from_env()
    stack = LocalStack(settings)
    stack.up()
    try:
        print(
            f"populating {args.models} versions over {args.datasets} datasets of "
            f"{args.records} records",
            file=sys.stderr,
        )
        populate_s = populate(settings, args.models, args.datasets, args.records)
        index = LineageIndex.from_settings(settings)
        summary = index.rebuild(mlflow_client(settings.mlflow_uri))
        patient = "PAT-000000"
        results = {}
        for name, question in (("audit_record", audit_record), ("impact", impact)):
            answer = question(settings, patient, endpoints=running_endpoints)
            assert len(answer.models) == args.models, (name, len(answer.models))
            indexed = timed(
                lambda q=question: q(settings, patient, endpoints=running_endpoints), args.repeats
            )
            started = time.perf_counter()
            scanned = question(settings, patient, endpoints=running_endpoints, scan=True)
            scan_ms = (time.perf_counter() - started) * 1000
            assert scanned.to_json()["models"] == answer.to_json()["models"]
            median = statistics.median(indexed)
            results[name] = {
                "indexed_ms_median": round(median, 1),
                "indexed_ms_p90": round(sorted(indexed)[int(0.9 * len(indexed))], 1),
                "scan_ms": round(scan_ms, 1),
                "speedup": round(scan_ms / median, 1),
                "models_found": len(answer.models),
            }
            print(
                f"{name}: indexed {median:.1f} ms (median of {args.repeats}), full scan "
                f"{scan_ms / 1000:.1f} s, {scan_ms / median:.0f}x",
                file=sys.stderr,
            )
        report = {
            "models": args.models,
            "datasets": args.datasets,
            "records_per_dataset": args.records,
            "index": {"rows": summary.records, "build_s": summary.seconds},
            "populate_s": round(populate_s, 1),
            **results,
            "goal": "indexed < 100 ms and >= 100x the scan",
            "met": all(
                r["indexed_ms_median"] < 100 and r["speedup"] >= 100 for r in results.values()
            ),
        }
        print(json.dumps(report, indent=2))
    finally:
        stack.down()


if __name__ == "__main__":
    main()
