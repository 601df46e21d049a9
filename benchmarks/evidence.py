"""What signing and verifying cost, one run (goals: signing adds < 1 s to a pipeline;
verifying a bundle for a 100k-record dataset takes < 5 s).

    python benchmarks/evidence.py [--records 100000] [--leaves 100000] [--model-mb 12]

Builds, in a temp home, what a pipeline signs: a dataset of `--records` small files (its
manifest and DVC `.dir` listing), a model directory of `--model-mb` MB (two weight files, as
MobileNetV3-Small's `model.onnx` and `weights.pt`), a transparency log already holding
`--leaves` consent events. Then times, in process:

- the processing job's signing (the `.dir` listing's bytes, the statement, the signature),
- the training job's signing (SLSA provenance over every file, `model.sig` over the
  directory, and its own check of both),
- the operator's part (two statements verified and put in the log, two signed heads),
- an evidence bundle's offline verification: signatures and proofs only, then with the
  model directory and the dataset files re-hashed (`--model-dir`, `--data-dir`).

Baselines measured in the same run: one sha256 pass over the model directory (what
`model_sha256` already costs every training job) and one sha256 + md5 pass over the dataset's
files (what any re-hash costs); the ratios say what the evidence adds on top.
Prints a table, then JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine

from lineage.attest.bundle import FORMAT, verify_bundle
from lineage.attest.envelopes import sign
from lineage.attest.host import Evidence
from lineage.attest.jobinput import JobEvidence, JobKeys
from lineage.attest.keys import KeyPaths, TrustStore, init_keys, load_key_file, utc_now
from lineage.attest.statements import decision
from lineage.attest.tlog import LogKeys, TransparencyLog
from lineage.config import Settings
from lineage.dvchash import directory_listing
from lineage.hashing import file_md5, file_sha256
from lineage.record import LineageRecord
from processing.attestation import sign_dataset
from training.attestation import sign_model
from training.hyperparameters import TrainingHyperparameters


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def make_dataset(root: Path, records: int) -> tuple[str, bytes]:
    """`records` files of ~600 bytes and their manifest; (manifest sha256, .dir listing)."""
    dataset = root / "dataset"
    rows = ["record_id,file_path,split,label,sha256"]
    for i in range(records):
        path = dataset / "train" / str(i % 10) / f"{i}.png"
        if i < 10 or not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        data = hashlib.sha256(str(i).encode()).digest() * 19
        path.write_bytes(data)
        rows.append(
            f"r{i},train/{i % 10}/{i}.png,train,{i % 10},{hashlib.sha256(data).hexdigest()}"
        )
    (dataset / "manifest.csv").write_text("\n".join(rows) + "\n")
    return file_sha256(dataset / "manifest.csv"), directory_listing(dataset)


def make_model(model: Path, megabytes: int) -> LineageRecord:
    model.mkdir(parents=True)
    half = megabytes * 1024 * 1024 // 2
    (model / "model.onnx").write_bytes(os.urandom(half))
    (model / "weights.pt").write_bytes(os.urandom(half))
    (model / "MLmodel").write_text("flavors: {}\n")
    record = LineageRecord(
        dvc_tag="bench", data_git_commit_id="c" * 40, run_id="r" * 32, classes=["a", "b"]
    ).with_model_bytes(model)
    record.write(model)
    return record


def fill_log(log: TransparencyLog, leaves: int) -> None:
    batch = 20_000
    for start in range(0, leaves, batch):
        with log.writing() as connection:
            log.append(
                connection,
                [
                    {"kind": "consent", "seq": i + 1, "hash": f"{i:064x}"}
                    for i in range(start, min(leaves, start + batch))
                ],
            )
    log.current_head()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--leaves", type=int, default=100_000)
    parser.add_argument("--model-mb", type=int, default=12)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lineage-bench-evidence-") as tmp:
        root = Path(tmp)
        home = root / "home"
        init_keys(home)
        settings = Settings.from_env({"LINEAGE_HOME": str(home)})
        evidence = Evidence(settings)
        key = load_key_file(KeyPaths(home).private)
        trust = TrustStore.load(home, {})
        keys = JobKeys(key, trust)
        log = TransparencyLog(create_engine(f"sqlite:///{root / 'log.db'}"), LogKeys.of_home(home))
        evidence.__dict__["log"] = log  # the benchmark's own database
        fill_log(log, args.leaves)
        manifest_sha, listing = make_dataset(root / "data", args.records)
        model = root / "model"
        record = make_model(model, args.model_mb)

        base_model, _ = timed(lambda: [file_sha256(p) for p in model.rglob("*") if p.is_file()])
        files = [p for p in (root / "data" / "dataset").rglob("*") if p.is_file()]
        base_data, _ = timed(lambda: [(file_sha256(p), file_md5(p)) for p in files])

        head = log.current_head()
        job_input = JobEvidence(head, None, trust.pem_bundle())
        dataset_md5 = hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"
        t_dataset, dataset_env = timed(
            lambda: sign_dataset(
                keys=keys,
                evidence=job_input,
                manifest_sha256=manifest_sha,
                listing=listing,  # the job reads DVC's cached `.dir` object, no re-hash
                dataset_md5=dataset_md5,
                predicate={"tag": "bench", "commit": "c" * 40},
            )
        )
        record = LineageRecord(
            **{**record.to_json(), "dataset_md5": dataset_md5, "manifest_sha256": manifest_sha}
        )
        record.write(model)
        t_model, provenance = timed(
            lambda: sign_model(
                model,
                keys=keys,
                evidence=job_input,
                record=record,
                params=TrainingHyperparameters(dvc_tag="bench"),
                dataset=dataset_env,
                started=utc_now(),
            )
        )

        def operator() -> Any:
            evidence.job_input(root / "ev1")
            evidence.record(dataset_env, "bench", "dataset statement")
            evidence.job_input(root / "ev2", dataset_env)
            return evidence.record(provenance, "runs:/r", "model provenance")

        t_operator, _ = timed(operator)
        promote = sign(
            decision(
                "promote",
                [{"name": "models:/m/1", "digest": {"sha256": provenance.digest}}],
                actor="bench",
                at=utc_now(),
                details={},
            ),
            key,
        )
        evidence.record(promote, "promote", "decision")
        bundle = build_bundle(evidence, log, provenance, dataset_env, promote, trust)
        data_dir = root / "data"
        t_verify, plain = timed(lambda: verify_bundle(bundle, trust))
        t_verify_model, with_model = timed(lambda: verify_bundle(bundle, trust, model_dir=model))
        t_verify_all, with_all = timed(
            lambda: verify_bundle(bundle, trust, model_dir=model, data_dir=data_dir)
        )
        for result in (plain, with_model, with_all):
            assert result.ok, result.to_json()
    signing = t_dataset + t_model + t_operator
    figures = {
        "records": args.records,
        "log_leaves": args.leaves,
        "model_mb": args.model_mb,
        "baseline_model_sha256_s": round(base_model, 3),
        "baseline_dataset_rehash_s": round(base_data, 3),
        "sign_dataset_s": round(t_dataset, 3),
        "sign_model_s": round(t_model, 3),
        "operator_record_s": round(t_operator, 3),
        "signing_added_to_pipeline_s": round(signing, 3),
        "signing_vs_model_hash": round(signing / base_model, 2) if base_model else None,
        "verify_bundle_s": round(t_verify, 3),
        "verify_bundle_and_model_s": round(t_verify_model, 3),
        "verify_bundle_model_and_data_s": round(t_verify_all, 3),
        "verify_all_vs_rehash": round(t_verify_all / base_data, 2) if base_data else None,
        "goals": {"signing_added_s": 1.0, "verify_bundle_s": 5.0},
    }
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        if name != "goals":
            print(f"{name:<{width}}  {value}")
    print(json.dumps(figures))
    return figures


def build_bundle(
    evidence: Evidence,
    log: TransparencyLog,
    provenance: Any,
    dataset: Any,
    promote: Any,
    trust: Any,
) -> dict[str, Any]:
    from lineage.attest.merkle import TreeHead

    head = log.current_head()
    statements = [provenance, dataset, promote]
    inclusion = {}
    with log.engine.begin() as connection:
        for envelope in statements:
            leaf = log.find(connection, "attestation", digest=envelope.digest)
            assert leaf is not None
            inclusion[envelope.digest] = {
                "index": leaf.index,
                "entry": leaf.body(),
                "proof": log.prove_inclusion(connection, leaf.index, head.size),
            }
        carried = TreeHead.from_json(
            dataset.body()["predicate"]["transparency_log"], "dataset head"
        )
        consistency = [
            {
                "from_size": carried.size,
                "proof": log.prove_consistency(connection, carried.size, head.size),
            }
        ]
    return {
        "format": FORMAT,
        "trusted_keys": trust.to_json(),
        "statements": {
            "provenance": provenance.to_json(),
            "dataset": dataset.to_json(),
            "decisions": [promote.to_json()],
        },
        "tree_head": head.to_json(),
        "inclusion": inclusion,
        "consistency": consistency,
        "report": None,
    }


if __name__ == "__main__":
    main()
