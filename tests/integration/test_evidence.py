"""Evidence a third party can check: each attack of the attestations issue performed against
the real stack, with the real MLflow API, git, S3 and SQLite, and checked with the stock
`model_signing` CLI and our offline verifier in an empty home without a network."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from lineage.attest.envelopes import Envelope, sign
from lineage.attest.keys import KeyPaths, init_keys, load_key_file
from lineage.attest.modelsig import sign_model_dir
from lineage.hashing import bytes_sha256
from lineage.ops.deploy import materialize
from lineage.storage import s3_client
from processing.sources import synthetic_cxr
from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import ok, random_imagefolder, stock_model_signing_verify
from tests.integration.conftest import private_registry_env

pytestmark = pytest.mark.integration


def failed_checks(out: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert out.returncode == 1, out.stderr[-2000:]
    return {c["name"]: c["detail"] for c in json.loads(out.stdout)["checks"] if not c["ok"]}


@dataclass
class Signed:
    """A signed model promoted to champion, and what was seen of the key while it was made."""

    name: str
    version: str
    run_id: str
    tag: str
    repo: str
    key_leaks: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


def _key_material(home: Path) -> list[bytes]:
    """What would betray the private key: its PEM body lines and the body as one string."""
    lines = [ln for ln in KeyPaths(home).private.read_text().splitlines() if "-----" not in ln]
    return [line.encode() for line in lines if len(line) > 20] + ["".join(lines).encode()]


@pytest.fixture(scope="module")
def signed(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    home = running_stack.settings.home
    init_keys(home)
    material = _key_material(home)
    leaks: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # every process's argv and environment while the jobs run
        while not stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                for name in ("cmdline", "environ"):
                    try:
                        data = (proc / name).read_bytes()
                    except OSError:
                        continue
                    if any(m in data for m in material):
                        leaks.append(f"{proc.name}/{name}")
            time.sleep(0.05)

    root = random_imagefolder(tmp_path_factory.mktemp("evidence") / "images", seed=7)
    repo = f"evidence-{uuid.uuid4().hex[:6]}"
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        made = ok(
            run_cli(
                *("pipeline", "--version", "e1", "--fraction", "1.0", "--epochs", "1"),
                *("--model-name", repo, "--source", f"imagefolder:{root}", "--repo", repo),
                "--json",
                env=running_stack.env,
                timeout=900,
            )
        )
    finally:
        stop.set()
        watcher.join(timeout=10)
    training = made["training"]
    version = str(training["model_version"])
    ok(
        run_cli(
            "promote",
            "--model",
            f"{repo}/{version}",
            "--alias",
            "champion",
            "--json",
            env=running_stack.env,
        )
    )
    return Signed(repo, version, training["run_id"], training["dvc_tag"], repo, leaks)


def _client(running_stack: RunningStack) -> MlflowClient:
    return MlflowClient(running_stack.settings.mlflow_uri)


# -- the private key stays where it is ---------------------------------------------------------


def test_the_private_key_is_in_no_job_file_argv_environment_or_run(
    running_stack: RunningStack, signed: Signed
) -> None:
    home = running_stack.settings.home
    material = _key_material(home)
    assert signed.key_leaks == []  # sampled from /proc while both jobs ran
    for job in (home / "jobs").iterdir():
        for path in job.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert not any(m in data for m in material), path
    run = _client(running_stack).get_run(signed.run_id)
    recorded = json.dumps({**run.data.params, **run.data.tags})
    assert not any(m.decode() in recorded for m in material)
    assert run.data.params["signer_key_id"] == load_key_file(KeyPaths(home).private).key_id
    for log in (home / "logs").glob("*.log"):
        assert not any(m in log.read_bytes() for m in material), log


# -- a run forged through the MLflow API alone -------------------------------------------------


def test_a_run_forged_through_the_mlflow_api_is_refused_by_trace_deploy_promote_export(
    running_stack: RunningStack, signed: Signed, tmp_path: Path
) -> None:
    """No database, no S3 keys: a new run copying the real run's params and tags, the real
    model with its class names swapped (predictions inverted) and its lineage.json naming the
    new run, consistent digests, a version registered with the copied tags, @champion moved to
    it. The signed provenance names the real run and the real classes."""
    client = _client(running_stack)
    real = client.get_run(signed.run_id)
    forged = client.create_run(real.info.experiment_id, run_name="train-forged")
    forged_id = forged.info.run_id
    created = None
    try:
        for key, value in real.data.params.items():
            client.log_param(forged_id, key, value)
        for key, value in real.data.tags.items():
            if not key.startswith("mlflow."):
                client.set_tag(forged_id, key, value)
        model_dir = Path(client.download_artifacts(signed.run_id, "model", str(tmp_path)))
        lineage = json.loads((model_dir / "lineage.json").read_text())
        lineage["classes"] = list(reversed(lineage["classes"]))
        lineage["run_id"] = forged_id
        (model_dir / "lineage.json").write_text(json.dumps(lineage))
        client.log_artifacts(forged_id, str(model_dir), "model")
        manifest = client.download_artifacts(signed.run_id, "manifest.csv", str(tmp_path / "m"))
        client.log_artifact(forged_id, manifest)
        client.set_terminated(forged_id)
        tags = client.get_model_version(signed.name, signed.version).tags
        created = client.create_model_version(
            signed.name, f"{forged.info.artifact_uri}/model", run_id=forged_id, tags=tags
        ).version
        client.set_registered_model_alias(signed.name, "champion", created)
        ref = f"{signed.name}@champion"

        traced = run_cli("trace", "--model", ref, "--json", env=running_stack.env)
        failed = failed_checks(traced)
        assert set(failed) == {"signed lineage.json", "signed run", "signed metrics"}, failed
        assert "classes" in failed["signed lineage.json"]
        assert (
            f"run_id: {forged_id} (the training job signed {signed.run_id})" in failed["signed run"]
        )

        port = str(free_port_block(1))
        deployed = run_cli("deploy", "--model", ref, "--port", port, env=running_stack.env)
        assert (
            deployed.returncode != 0 and "is not deployable: signed lineage.json" in deployed.stderr
        )
        promoted = run_cli(
            "promote", "--model", f"{signed.name}/{created}", "--alias", "x", env=running_stack.env
        )
        assert promoted.returncode != 0 and "is not promotable" in promoted.stderr
        exported = run_cli(
            "export",
            "--model",
            ref,
            "--format",
            "prov-json",
            "--out",
            str(tmp_path / "p.json"),
            env=running_stack.env,
        )
        assert exported.returncode != 0 and not (tmp_path / "p.json").exists()
    finally:
        client.set_registered_model_alias(signed.name, "champion", signed.version)
        if created is not None:
            client.delete_model_version(signed.name, created)
        client.delete_run(forged_id)


# -- the documented blind spot: MLflow's database and the artifact store together --------------


def _artifact_key(running_stack: RunningStack, run_id: str, path: str) -> str:
    run = _client(running_stack).get_run(run_id)
    root = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    return f"artifacts/{root}/{path}"


def _set_param(db: Path, run_id: str, key: str, value: str) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE params SET value = ? WHERE run_uuid = ? AND key = ?", (value, run_id, key)
        )


def test_weights_lineage_json_and_run_params_rewritten_together_are_caught_by_signature(
    running_stack: RunningStack, signed: Signed, tmp_path: Path
) -> None:
    """Write access to the MLflow database and the artifact store: new weights, lineage.json
    and the run's params and version tags all rewritten to agree. Every digest check passes;
    the signature, made by a key the attacker does not hold, does not."""
    from lineage.record import model_digest

    settings = running_stack.settings
    client = _client(running_stack)
    s3 = s3_client(settings)
    bucket = settings.mlflow_bucket
    names = ("weights.pt", "lineage.json")
    keys = {n: _artifact_key(running_stack, signed.run_id, f"model/{n}") for n in names}
    saved = {n: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for n, k in keys.items()}
    model_dir = Path(client.download_artifacts(signed.run_id, "model", str(tmp_path)))
    (model_dir / "weights.pt").write_bytes(saved["weights.pt"] + b"\0")  # any other bytes
    forged = {
        "weights_sha256": bytes_sha256(saved["weights.pt"] + b"\0"),
        "model_sha256": model_digest(model_dir),
    }
    old = {k: client.get_run(signed.run_id).data.params[k] for k in forged}
    db = settings.home / "mlflow" / "mlflow.db"
    try:
        s3.put_object(Bucket=bucket, Key=keys["weights.pt"], Body=saved["weights.pt"] + b"\0")
        lineage = json.loads(saved["lineage.json"]) | forged
        s3.put_object(Bucket=bucket, Key=keys["lineage.json"], Body=json.dumps(lineage).encode())
        for fact, value in forged.items():
            _set_param(db, signed.run_id, fact, value)
            client.set_model_version_tag(signed.name, signed.version, fact, value)
        traced = run_cli("trace", "--model", signed.ref, "--json", env=running_stack.env)
        failed = failed_checks(traced)
        assert list(failed) == ["signature"], failed  # every digest agrees; the signature ...
        assert "changed: weights.pt" in failed["signature"]  # ... names the file
        deployed = run_cli(
            "deploy",
            "--model",
            signed.ref,
            "--port",
            str(free_port_block(1)),
            env=running_stack.env,
        )
        assert deployed.returncode != 0 and "is not deployable: signature" in deployed.stderr
    finally:
        for name, key in keys.items():
            s3.put_object(Bucket=bucket, Key=key, Body=saved[name])
        for fact, value in old.items():
            _set_param(db, signed.run_id, fact, value)
            client.set_model_version_tag(signed.name, signed.version, fact, value)
    assert run_cli("trace", "--model", signed.ref, env=running_stack.env).returncode == 0


def test_an_attestation_re_signed_with_another_key_is_refused(
    running_stack: RunningStack, signed: Signed, tmp_path: Path
) -> None:
    settings = running_stack.settings
    s3 = s3_client(settings)
    bucket = settings.mlflow_bucket
    names = ("provenance.dsse.json", "model.sig")
    keys = {n: _artifact_key(running_stack, signed.run_id, f"model/{n}") for n in names}
    saved = {n: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for n, k in keys.items()}
    model_dir = Path(
        _client(running_stack).download_artifacts(signed.run_id, "model", str(tmp_path))
    )
    other = tmp_path / "other-home"
    init_keys(other)
    mallory = load_key_file(KeyPaths(other).private)
    body = Envelope.read(model_dir / "provenance.dsse.json").body()
    sign(body, mallory).write(model_dir / "provenance.dsse.json")
    sign_model_dir(model_dir, mallory, KeyPaths(other).private)
    try:
        for name, key in keys.items():
            s3.put_object(Bucket=bucket, Key=key, Body=(model_dir / name).read_bytes())
        failed = failed_checks(
            run_cli("trace", "--model", signed.ref, "--json", env=running_stack.env)
        )
        assert list(failed) == ["signature"] and "does not verify" in failed["signature"]
    finally:
        for name, key in keys.items():
            s3.put_object(Bucket=bucket, Key=key, Body=saved[name])


# -- the deployed model, the stock tool, the server --------------------------------------------


def test_the_stock_model_signing_cli_verifies_the_deployed_model_and_rejects_a_tampered_copy(
    running_stack: RunningStack, signed: Signed, tmp_path: Path
) -> None:
    public = KeyPaths(running_stack.settings.home).public
    info = materialize(running_stack.settings, signed.ref, tmp_path / "endpoint")
    lineage = json.loads((info.model_dir / "lineage.json").read_text())
    assert lineage["model_signing_ignore"] == ["lineage.json", "registered_model_meta"]
    done = stock_model_signing_verify(info.model_dir, public)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout + done.stderr
    copy = tmp_path / "copy"
    shutil.copytree(info.model_dir, copy)
    onnx = bytearray((copy / "model.onnx").read_bytes())
    onnx[len(onnx) // 2] ^= 0x01
    (copy / "model.onnx").write_bytes(bytes(onnx))
    failed = stock_model_signing_verify(copy, public)
    assert failed.returncode != 0 and "model.onnx" in failed.stdout + failed.stderr


def _serve(model_dir: Path, trusted: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(free_port_block(1))}
    env.pop("LINEAGE_TRUSTED_KEYS", None)
    if trusted is not None:
        env["LINEAGE_TRUSTED_KEYS"] = trusted
    return subprocess.run(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(model_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_server_refuses_a_tampered_model_when_trusted_keys_are_set(
    running_stack: RunningStack, signed: Signed, tmp_path: Path
) -> None:
    pem = KeyPaths(running_stack.settings.home).public.read_text()
    info = materialize(running_stack.settings, signed.ref, tmp_path / "endpoint")
    lineage = json.loads((info.model_dir / "lineage.json").read_text())
    lineage["classes"] = list(reversed(lineage["classes"]))
    (info.model_dir / "lineage.json").write_text(json.dumps(lineage))
    refused = _serve(info.model_dir, pem)
    assert refused.returncode != 0
    assert "lineage.json does not repeat what the training job signed: classes" in refused.stderr
    (info.model_dir / "model.sig").unlink()
    unsigned = _serve(info.model_dir, pem)
    assert unsigned.returncode != 0 and "no model.sig" in unsigned.stderr


def test_a_deployed_endpoint_names_its_signer_in_every_answer(
    running_stack: RunningStack, signed: Signed, tmp_path: Path
) -> None:
    import httpx

    port = free_port_block(1)
    deployed = ok(
        run_cli(
            "deploy",
            "--model",
            f"{signed.name}@champion",
            "--port",
            str(port),
            "--json",
            env=running_stack.env,
            timeout=300,
        )
    )
    try:
        url = deployed["endpoint"]
        served = httpx.get(f"{url}/lineage", timeout=10).json()
        kid = load_key_file(KeyPaths(running_stack.settings.home).private).key_id
        assert served["signed"] is True and served["signer_key_id"] == kid
        assert served["attestation_sha256"] == deployed["attestation_sha256"]
        image = next((tmp_path.parent).rglob("*.png"), None) or _png(tmp_path)
        answer = httpx.post(
            f"{url}/invocations",
            content=image.read_bytes(),
            headers={"Content-Type": "image/png"},
            timeout=30,
        ).json()
        assert answer["lineage"]["signer_key_id"] == kid
        traced = ok(run_cli("trace", "--endpoint", url, "--json", env=running_stack.env))
        checks = {c["name"]: c for c in traced["checks"]}
        assert checks["endpoint signature"]["ok"] and checks["transparency log"]["ok"]
    finally:
        run_cli("deploy", "--stop", "--port", str(port), env=running_stack.env)


def _png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(path)
    return path


# -- the evidence bundle, offline ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(
    running_stack: RunningStack, signed: Signed, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "evidence.json"
    made = ok(
        run_cli(
            "evidence",
            "bundle",
            "--model",
            f"{signed.name}@champion",
            "--out",
            str(out),
            "--json",
            env=running_stack.env,
            timeout=600,
        )
    )
    assert made["statements"] >= 3  # provenance, dataset, promote, audit report
    return out


def _offline_verify(
    bundle: Path, key: Path, home: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`lineage evidence verify` with no stack, an empty LINEAGE_HOME, and (as root) no
    network at all (`unshare -n`)."""
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LINEAGE_HOME": str(home / ".lineage")}
    argv = [
        sys.executable,
        "-m",
        "lineage",
        "evidence",
        "verify",
        str(bundle),
        "--key",
        str(key),
        *extra,
        "--json",
    ]
    if os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "-n", *argv]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_bundle_verifies_offline_in_an_empty_home(
    running_stack: RunningStack, bundle: Path, signed: Signed, tmp_path: Path
) -> None:
    key = tmp_path / "signer.pem"
    shutil.copy(KeyPaths(running_stack.settings.home).public, key)
    info = materialize(running_stack.settings, signed.ref, tmp_path / "endpoint")
    checkout = tmp_path / "data"
    ok(
        run_cli(
            "reproduce",
            "--model",
            signed.ref,
            "--dir",
            str(checkout),
            "--json",
            env=running_stack.env,
            timeout=600,
        )
    )
    done = _offline_verify(
        bundle,
        key,
        tmp_path / "auditor",
        "--model-dir",
        str(info.model_dir),
        "--data-dir",
        str(checkout),
    )
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["ok"], result
    names = [c["name"] for c in result["checks"]]
    assert {
        "tree head",
        "model provenance",
        "dataset statement",
        "provenance cites the dataset",
        "audit report",
        "model files",
        "dataset files",
    } <= set(names)
    assert any(n.startswith("log consistency") for n in names)
    assert not (tmp_path / "auditor" / ".lineage").exists()  # nothing written in the home

    # a changed dataset file is named
    png = next(checkout.rglob("*.png"))
    png.write_bytes(png.read_bytes() + b"\0")
    failed = json.loads(
        _offline_verify(bundle, key, tmp_path / "auditor", "--data-dir", str(checkout)).stdout
    )
    assert failed["first_failure"]["name"] == "dataset files"
    assert png.name in failed["first_failure"]["detail"]


def _tampered(bundle: Path, tmp_path: Path, change: Any) -> Path:
    data = json.loads(bundle.read_text())
    change(data)
    out = tmp_path / f"tampered-{uuid.uuid4().hex[:6]}.json"
    out.write_text(json.dumps(data))
    return out


def _payload(envelope: dict[str, Any], edit: Any) -> None:
    body = json.loads(base64.b64decode(envelope["payload"]))
    edit(body)
    envelope["payload"] = base64.b64encode(json.dumps(body).encode()).decode()


def test_a_tampered_bundle_names_the_first_thing_that_fails(
    running_stack: RunningStack, bundle: Path, tmp_path: Path
) -> None:
    key = tmp_path / "signer.pem"
    shutil.copy(KeyPaths(running_stack.settings.home).public, key)

    def first_failure(change: Any, *extra: str) -> str:
        done = _offline_verify(_tampered(bundle, tmp_path, change), key, tmp_path / "a", *extra)
        assert done.returncode == 1, done.stderr
        return str(json.loads(done.stdout)["first_failure"]["name"])

    def relabel(data: dict[str, Any]) -> None:
        _payload(
            data["statements"]["provenance"],
            lambda b: b["predicate"]["buildDefinition"]["internalParameters"][
                "lineage"
            ].__setitem__("classes", ["x", "y"]),
        )

    assert first_failure(relabel) == "model provenance"
    assert (
        first_failure(
            lambda d: d["tree_head"]["envelope"].__setitem__(
                "payload",
                base64.b64encode(b'{"log_id":"x","size":1,"root":"00","timestamp":"t"}').decode(),
            )
        )
        == "tree head"
    )

    def sibling(data: dict[str, Any]) -> None:
        (proof,) = [
            p["proof"]
            for p in data["inclusion"].values()
            if p["entry"]["predicate_type"] == "https://slsa.dev/provenance/v1"
        ]
        proof["path"][-1] = "00" * 32

    assert first_failure(sibling) == "model provenance"
    assert (
        first_failure(lambda d: d["report"].__setitem__("html", d["report"]["html"] + "<!-- -->"))
        == "audit report"
    )
    other = tmp_path / "other"
    init_keys(other)
    done = _offline_verify(bundle, KeyPaths(other).public, tmp_path / "a")
    assert done.returncode == 1
    assert json.loads(done.stdout)["first_failure"]["name"] == "tree head"


# -- the consent log truncated, its local anchors rolled back with the key ----------------------


def test_a_truncated_consent_log_is_caught_against_the_head_a_dataset_statement_carries(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    """The attacker holds the registry's database, the consent key and LINEAGE_HOME, not the
    signing key. After a withdrawal, a record-pattern dataset was published (its signed
    statement and its run carry the log's signed head, withdrawal included). The attacker
    deletes the withdrawal, rebuilds the log's leaves without it, deletes the signed heads and
    rolls the witness file back: every local check passes again, and the patient reads as
    granted. The head the dataset's statement carries does not agree."""
    db = tmp_path / "consent.db"
    env = private_registry_env(running_stack, tmp_path)
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "registry.csv").write_text(synthetic_cxr.registry_csv())
    ok(run_cli("consent", "import", str(cohort / "registry.csv"), "--json", env=env))
    patient = next(
        line.split(",")[0]
        for line in (cohort / "registry.csv").read_text().splitlines()[1:]
        if line.rstrip().endswith(",granted")
    )
    witness_dir = running_stack.settings.home / "tlog-heads"
    before = {p: p.read_text() for p in witness_dir.glob("*.jsonl")}
    withdrawn = ok(
        run_cli("consent", "withdraw", patient, "--reason", "request", "--json", env=env)
    )
    seq = int(withdrawn["seq"]) if "seq" in withdrawn else int(withdrawn["event"]["seq"])
    repo = f"consent-{uuid.uuid4().hex[:6]}"
    published = ok(
        run_cli(
            "process",
            "--version",
            "c1",
            "--fraction",
            "0.2",
            "--pattern",
            "record",
            "--source",
            "synthetic-cxr",
            "--repo",
            repo,
            "--json",
            env=env,
            timeout=600,
        )
    )
    assert published["attestation_sha256"]
    assert (
        ok(run_cli("consent", "verify", "--json", env=env))["transparency_log"][
            "recorded_heads_checked"
        ]
        >= 1
    )

    with sqlite3.connect(db) as connection:  # the rewrite: the withdrawal and its leaf gone
        leaves = connection.execute(
            "SELECT idx, kind, entry, leaf_hash, appended_at FROM tlog_leaves ORDER BY idx"
        ).fetchall()
        connection.execute("DELETE FROM consent_events WHERE seq = ?", (seq,))
        connection.execute("DELETE FROM tlog_leaves")
        connection.execute("DELETE FROM tlog_heads")
        kept = [
            row for row in leaves if not (row[1] == "consent" and json.loads(row[2])["seq"] == seq)
        ]
        connection.executemany(
            "INSERT INTO tlog_leaves (idx, kind, entry, leaf_hash, appended_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(i, *row[1:]) for i, row in enumerate(kept, start=1)],
        )
    for path in witness_dir.glob("*.jsonl"):
        if path in before:
            path.write_text(before[path])  # rolled back to before the withdrawal

    offline = ok(run_cli("consent", "verify", "--offline", "--json", env=env))
    assert offline["ok"]  # the local anchors alone agree with the rewritten log
    status = ok(run_cli("consent", "status", patient, "--json", env=env))
    assert status["status"] == "granted"
    online = run_cli("consent", "verify", "--json", env=env)
    assert online.returncode != 0  # the consent head the run recorded is gone ...
    assert f"event {seq} was anchored" in online.stderr
    logged = run_cli("log", "verify", env=env)  # ... and the signed tree head it carries:
    assert logged.returncode != 0
    assert "no longer hash to the root recorded" in logged.stderr

    # offline, as an auditor holding the dataset's statement: its head against the log now
    from lineage.attest.keys import AttestationError, TrustStore
    from lineage.attest.merkle import TreeHead, check_consistency, verify_head

    statement = Envelope.from_json(published_statement(running_stack, env, repo, published["tag"]))
    carried = TreeHead.from_json(statement.body()["predicate"]["transparency_log"])
    assert carried.size >= seq
    now = ok(run_cli("log", "prove", "--from", str(carried.size), "--json", env=env))
    trust = TrustStore.from_value(KeyPaths(running_stack.settings.home).public.read_text())
    current = verify_head(TreeHead.from_json(now["tree_head"]), trust)
    with pytest.raises(AttestationError, match=r"forked|not an extension"):
        check_consistency(verify_head(carried, trust), current, now["proof"])


def published_statement(
    running_stack: RunningStack, env: dict[str, str], repo: str, tag: str
) -> dict[str, Any]:
    """The dataset statement the processing run of `tag` logged (an MLflow artifact)."""
    from lineage.tracking import DEFAULT_EXPERIMENT, processing_artifact

    text = processing_artifact(
        running_stack.settings.mlflow_uri, DEFAULT_EXPERIMENT, tag, "dataset.dsse.json"
    )
    assert text is not None, repo
    found: dict[str, Any] = json.loads(text)
    return found
