"""`lineage keys`, `lineage log`, `lineage evidence`: the signing keys, the transparency log,
and evidence an auditor verifies offline."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from lineage.cli.options import Json
from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.errors import LineageError

keys_app = typer.Typer(help="The signing key and the public keys we trust.", no_args_is_help=True)
log_app = typer.Typer(
    help="The transparency log: signed tree heads, inclusion and consistency proofs.",
    no_args_is_help=True,
)
evidence_app = typer.Typer(
    help="Evidence a third party checks with a public key alone.", no_args_is_help=True
)


def _print_key(info: Mapping[str, object]) -> None:
    console.print(f"key id      {info['key_id']}")
    console.print(f"public key  {info['public_key']}")
    console.print(f"private key {info['private_key']}")
    console.print(f"algorithm   {info['algorithm']}")


@keys_app.command("init")
def keys_init(json_output: Json = False) -> None:
    """Create the signing key (ECDSA P-256, 0600) and the trust file, once."""
    from lineage.attest.keys import init_keys

    info = init_keys(Settings.from_env().home)
    if json_output:
        emit_json(info.to_json())
        return
    console.print("created a new signing key" if info.created else "the signing key exists")
    _print_key(info.to_json())


@keys_app.command("show")
def keys_show(json_output: Json = False) -> None:
    """The key that signs (its id: sha256 of the public key's DER) and the keys trusted."""
    from lineage.attest.host import Evidence

    settings = Settings.from_env()
    evidence = Evidence(settings)
    key = evidence.key
    public = (
        str(settings.signing_key_file.with_name("signing-key.pub.pem"))
        if not settings.signing_kms_key_id
        else key.source
    )
    trusted = [
        {k: v for k, v in entry.items() if k != "public_key"}
        for entry in evidence.trust.to_json()["keys"]
    ]
    shown = {
        "key_id": key.key_id,
        "public_key": public,
        "private_key": key.source,
        "algorithm": "ecdsa-sha2-nistp256",
        "trusted": trusted,
        "trust_source": evidence.trust.source,
    }
    if json_output:
        emit_json(shown)
        return
    _print_key(shown)
    for entry in trusted:
        window = f"{entry['not_before'] or '-'} .. {entry['not_after'] or 'now'}"
        console.print(f"trusted     {entry['key_id'][:16]}  {window}  ({entry['source']})")


@keys_app.command("rotate")
def keys_rotate(json_output: Json = False) -> None:
    """A new signing key from now on; the old one stays trusted for what it signed before."""
    from lineage.attest.keys import rotate_keys

    info = rotate_keys(Settings.from_env().home)
    if json_output:
        emit_json(info.to_json())
        return
    console.print(f"retired {', '.join(k[:16] for k in info.retired)}; new key:")
    _print_key(info.to_json())


@keys_app.command("trust-kms")
def keys_trust_kms(
    kms_key_id: Annotated[str, typer.Argument(help="AWS KMS key id or ARN (ECC_NIST_P256).")],
    json_output: Json = False,
) -> None:
    """Trust a KMS signing key (`kms:GetPublicKey`): SageMaker jobs sign with it."""
    from lineage.attest.keys import trust_kms_key

    info = trust_kms_key(Settings.from_env().home, kms_key_id)
    if json_output:
        emit_json(info.to_json())
        return
    console.print(f"trusted {info.private_key}: key id {info.key_id}")


@log_app.command("head")
def log_head(json_output: Json = False) -> None:
    """The log's newest signed tree head (a new one when the log grew)."""
    from lineage.attest.host import Evidence

    head = Evidence(Settings.from_env()).head()
    if json_output:
        emit_json(head.to_json())
        return
    console.print(
        f"log {head.log_id}: {head.size} leaves, root {head.root}, signed at {head.timestamp}"
    )


@log_app.command("prove")
def log_prove(
    from_size: Annotated[
        int | None, typer.Option("--from", help="Consistency proof from this older size.")
    ] = None,
    digest: Annotated[
        str | None, typer.Option(help="Inclusion proof of this statement (sha256).")
    ] = None,
    leaf: Annotated[
        int | None, typer.Option(help="Inclusion proof of this leaf (1-based).")
    ] = None,
    json_output: Json = False,
) -> None:
    """A consistency proof from an older size to the newest head, or an inclusion proof."""
    from lineage.attest.host import Evidence

    if (from_size is None) == (digest is None and leaf is None):
        raise LineageError("prove takes --from SIZE, or --digest SHA256 / --leaf N")
    evidence = Evidence(Settings.from_env())
    head = evidence.head()
    log = evidence.log
    with log.engine.begin() as connection:
        if from_size is not None:
            if not 0 <= from_size <= head.size:
                raise LineageError(f"--from {from_size} is not a size of this log (0..{head.size})")
            result = {
                "kind": "consistency",
                "from_size": from_size,
                "tree_head": head.to_json(),
                "proof": log.prove_consistency(connection, from_size, head.size),
            }
        else:
            found = (
                log.find(connection, "attestation", digest=digest)
                if digest
                else next((x for x in log.leaves(connection) if x.index == leaf), None)
            )
            if found is None:
                raise LineageError("no such leaf in the transparency log")
            result = {
                "kind": "inclusion",
                "index": found.index,
                "entry": found.body(),
                "tree_head": head.to_json(),
                "proof": log.prove_inclusion(connection, found.index, head.size),
            }
    if json_output:
        emit_json(result)
        return
    console.print(json.dumps(result, indent=1))


@log_app.command("verify")
def log_verify(
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Only the database and the witness file, not the heads in MLflow."
        ),
    ] = False,
    json_output: Json = False,
) -> None:
    """Check the log: its leaves against the newest signed heads (database and witness
    file) and, unless --offline, against every signed head a run recorded in MLflow."""
    from lineage.attest.host import Evidence

    settings = Settings.from_env()
    recorded = []
    if not offline:
        from lineage.consent.recorded import tree_heads_recorded_in_mlflow
        from lineage.registry import mlflow_client

        recorded = tree_heads_recorded_in_mlflow(mlflow_client(settings.mlflow_uri))
    evidence = Evidence(settings)
    with evidence.log.engine.begin() as connection:
        head = evidence.log.verify(connection, entries=True)
        checked = evidence.log.check_against(connection, recorded)
        size = evidence.log.size(connection)
    shown = {
        "ok": True,
        "leaves": size,
        "head": None if head is None else head.to_json(),
        "recorded_heads_checked": checked,
        "mlflow_checked": not offline,
    }
    if json_output:
        emit_json(shown)
        return
    console.print(
        f"transparency log intact: {size} leaves"
        + ("" if head is None else f", newest signed head {head.size} at {head.timestamp}")
        + ("" if offline else f"; consistent with {checked} heads recorded in MLflow")
    )


@log_app.command("adopt")
def log_adopt(json_output: Json = False) -> None:
    """Witness the database's newest signed head again, after LINEAGE_HOME moved (checked
    first: its signature, and the leaves still hash to it)."""
    from lineage.attest.host import Evidence

    head = Evidence(Settings.from_env()).log.adopt()
    if json_output:
        emit_json({"adopted": None if head is None else head.to_json()})
        return
    console.print(
        "no signed head to adopt" if head is None else f"witnessed head {head.size} ({head.root})"
    )


@evidence_app.command("bundle")
def evidence_bundle(
    model: Annotated[str, typer.Option("--model", help="NAME@ALIAS or NAME/VERSION")],
    out: Annotated[Path, typer.Option(help="The bundle file to write (JSON).")],
    json_output: Json = False,
) -> None:
    """Write one file with the model's and its dataset's signed statements, the decisions,
    the signed tree head, the proofs, the public keys and the HTML audit report."""
    from lineage.audit.evidence import write_bundle
    from lineage.ops.deploy import running_endpoints

    written = write_bundle(Settings.from_env(), model, out, endpoints=running_endpoints)
    if json_output:
        emit_json(written.to_json())
        return
    console.print(
        f"wrote {written.path}: {written.model}, {written.statements} signed statements, "
        f"log of {written.tree_size} leaves; report: {written.report_verdict}"
    )


@evidence_app.command("verify")
def evidence_verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    key: Annotated[
        list[Path], typer.Option("--key", help="The signer's public key (PEM or trust.json).")
    ],
    model_dir: Annotated[
        Path | None, typer.Option(help="A model directory to re-hash against the bundle.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="A dataset checkout to re-hash against the bundle.")
    ] = None,
    json_output: Json = False,
) -> None:
    """Verify a bundle offline: no stack, no LINEAGE_HOME, no network. Exit 1 at the first
    thing that fails, naming it."""
    from lineage.attest.bundle import verify_bundle
    from lineage.attest.keys import TrustStore

    try:
        data = json.loads(bundle.read_text())
    except (OSError, ValueError) as exc:
        raise LineageError(f"cannot read the bundle {bundle} ({exc.__class__.__name__})") from None
    trusted = [TrustStore.from_value(str(path)) for path in key]
    trust = TrustStore.of([k for t in trusted for k in t.keys.values()], ", ".join(map(str, key)))
    result = verify_bundle(data, trust, model_dir=model_dir, data_dir=data_dir)
    if json_output:
        emit_json(result.to_json())
    else:
        for check in result.checks:
            mark = "ok    " if check.ok else "FAILED"
            console.print(f"{mark} {check.name}: {check.detail}", soft_wrap=True)
        console.print("evidence verified" if result.ok else "evidence NOT verified")
    if not result.ok:
        raise typer.Exit(1)
