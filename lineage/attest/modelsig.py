"""`model.sig`: the model directory signed in the OpenSSF model-signing format.

The stock tool verifies it with no code of ours:

    cd MODEL_DIR && python -m model_signing verify key --signature model.sig \\
        --public_key KEY.pem --ignore-paths lineage.json registered_model_meta .

The signature covers every file of the directory but `lineage.json` (re-stamped at
registration and deploy; its training-time facts are inside the signed provenance) and
`registered_model_meta` (added by MLflow when it downloads `models:/`); those two names are
recorded in the signed manifest itself, so ignoring more than that fails verification (a
file the signature covers cannot be dropped from the check).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from lineage.attest.keys import AttestationError, SigningKey, TrustedKey, TrustStore
from lineage.attest.statements import MODEL_SIGNING_IGNORE, SIGNATURE_FILE


def _hashing_config() -> Any:
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(  # type: ignore[no-untyped-call]
        paths=[*MODEL_SIGNING_IGNORE, SIGNATURE_FILE], ignore_git_paths=True
    )


def sign_model_dir(model_dir: Path, key: SigningKey, key_file: Path | None) -> Path:
    """Write `model_dir/model.sig`, signed by `key` (its PEM file, or through KMS)."""
    from model_signing import signing

    config = signing.Config().set_hashing_config(_hashing_config())  # type: ignore[no-untyped-call]
    if key_file is not None:
        config.use_elliptic_key_signer(private_key=key_file)
    else:
        config._signer = _kms_model_signer(key)
    target = model_dir / SIGNATURE_FILE
    config.sign(model_dir, target)
    return target


def _kms_model_signer(key: SigningKey) -> Any:
    """model-signing's elliptic-key signer over a private key that lives in KMS: the same
    bundle format, the signature made by `kms:Sign` on the payload's SHA-256 digest."""
    from model_signing._signing import sign_ec_key

    from lineage.attest.keys import load_public_key

    public = load_public_key(key.public_key)
    signer = sign_ec_key.Signer.__new__(sign_ec_key.Signer)
    signer._private_key = _KmsPrivateKey(public, key.signer.sign)  # type: ignore[assignment]
    return signer


class _KmsPrivateKey:
    """The two calls model-signing makes of a cryptography private key, answered by KMS."""

    def __init__(self, public: ec.EllipticCurvePublicKey, sign: Callable[[bytes], Any]) -> None:
        self._public = public
        self._sign = sign

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes, _algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        signature = self._sign(data)  # securesystemslib's AWSSigner: DER, hex in .signature
        der = bytes.fromhex(signature.signature)
        # the signature must be over SHA-256(data), as ECDSA(SHA256()) would make it
        from cryptography.exceptions import InvalidSignature

        try:
            self._public.verify(
                der, hashlib.sha256(data).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
            )
        except InvalidSignature:
            raise AttestationError(
                "the KMS key's signature does not verify against its own public key",
                "check the key is ECC_NIST_P256 with ECDSA_SHA_256 and that kms:Sign is real KMS",
            ) from None
        return der


def signature_key_hint(model_dir: Path) -> str:
    """The signer's public-key hint model-signing stores (sha256 of its PEM)."""
    try:
        bundle = json.loads((model_dir / SIGNATURE_FILE).read_text())
        return str(bundle["verificationMaterial"]["publicKey"]["hint"] or "")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def verify_model_dir(model_dir: Path, trust: TrustStore) -> TrustedKey:
    """The trusted key whose `model.sig` matches every file of `model_dir` (AttestationError
    naming the file otherwise: a changed, missing or extra file, or an untrusted signer)."""
    from model_signing import verifying

    signature = model_dir / SIGNATURE_FILE
    if not signature.is_file():
        raise AttestationError(
            f"{model_dir} has no {SIGNATURE_FILE}: the model is unsigned (trained before "
            "signing, or not by `lineage train`)",
            "retrain it with this version of `lineage train`",
        )
    if not trust:
        raise AttestationError("no trusted keys to verify model.sig against")
    hint = signature_key_hint(model_dir)
    candidates = sorted(
        trust.keys.values(),
        key=lambda k: hashlib.sha256(k.public_key.encode()).hexdigest() != hint,
    )
    problems = []
    with tempfile.TemporaryDirectory(prefix="lineage-keys-") as tmp:
        for key in candidates:
            pem = Path(tmp) / f"{key.key_id}.pem"
            pem.write_text(key.public_key)
            config = verifying.Config().use_elliptic_key_verifier(  # type: ignore[no-untyped-call]
                public_key=pem
            )
            try:
                config.set_hashing_config(_hashing_config()).verify(model_dir, signature)
            except ValueError as exc:
                problems.append(f"key {key.key_id[:16]}: {_short(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001 - cryptography's InvalidSignature, etc.
                problems.append(f"key {key.key_id[:16]}: {exc.__class__.__name__}")
                continue
            return key
    raise AttestationError(
        f"{signature} does not verify: " + "; ".join(problems[:3]),
        "the model's files were changed after training, or it was signed by an untrusted key",
    )


def _short(exc: Exception) -> str:
    """model-signing's mismatch message, with the files named instead of digest reprs."""
    text = str(exc)
    changed = re.findall(r"Hash mismatch for \\*'([^'\\]+)", text)
    if changed:
        return "changed: " + ", ".join(changed)
    return text[:300]
