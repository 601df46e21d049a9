"""Signing keys and the keys we trust.

- **The signing key** is ECDSA P-256. By default a key file created once in
  `LINEAGE_HOME/keys/signing-key.pem` (PKCS#8 PEM, mode 0600) with its public half beside it;
  `LINEAGE_SIGNING_KEY_FILE` names another file, and `LINEAGE_SIGNING_KMS_KEY_ID` an AWS KMS
  asymmetric key (`ECC_NIST_P256`, `SIGN_VERIFY`) that signs through `kms:Sign` instead (on
  SageMaker, the jobs' role needs `kms:Sign` and `kms:GetPublicKey` on it). The private key
  reaches a job only as a *path* (a read-only bind mount in a container) or a KMS key id:
  never its bytes in an environment variable, argv, MLflow, a log or a job config file.
- **A key id** is the sha256 of the public key's DER (SubjectPublicKeyInfo), hex: what DSSE
  signatures name and what `lineage keys show` prints.
- **The trust store** is the list of public keys whose signatures count, each with a
  validity period (`keys/trust.json`, public data). Rotating the key closes the old key's
  period and opens the new one's: statements signed before keep verifying, the old key
  cannot sign anything dated later. `LINEAGE_TRUSTED_KEYS` (PEM text, a PEM file, or a
  trust.json) replaces it, e.g. on an auditor's machine or in an endpoint's environment.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lineage import contract
from lineage.credentials import private_dir, write_private, write_private_once
from lineage.errors import ConfigError, LineageError

if TYPE_CHECKING:  # securesystemslib loads boto3 (its KMS signer): imported where it is used
    from securesystemslib.signer import Signer, SSlibKey

ALGORITHM = "ecdsa-sha2-nistp256"
KEYS_DIR = "keys"
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub.pem"
TRUST_FILE = "trust.json"
SIGNING_KEY_FILE_ENV = contract.SIGNING_KEY_FILE_ENV
SIGNING_KMS_ENV = contract.SIGNING_KMS_ENV
TRUSTED_KEYS_ENV = contract.TRUSTED_KEYS_ENV
_PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
_PEM_END = "-----END PUBLIC KEY-----"


class AttestationError(LineageError):
    """A signature, statement or proof does not hold: the evidence cannot be trusted."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the public key's DER SubjectPublicKeyInfo, hex."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"not a PEM public key ({exc})", "pass a PEM file") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(
            "only ECDSA P-256 public keys are supported", "create keys with `lineage keys init`"
        )
    return key


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose signatures count between `not_before` and `not_after`."""

    key_id: str
    public_key: str  # PEM
    not_before: str = ""  # ISO 8601 UTC; "" = always
    not_after: str = ""  # "" = still valid
    source: str = "file"  # file | kms:<key id> | pem
    algorithm: str = ALGORITHM

    @classmethod
    def from_pem(cls, pem: str, source: str = "pem", not_before: str = "") -> TrustedKey:
        key = load_public_key(pem)
        return cls(key_id(key), public_pem(key), not_before=not_before, source=source)

    def valid_at(self, moment: str | None) -> bool:
        if moment is None:
            return True
        return (not self.not_before or moment >= self.not_before) and (
            not self.not_after or moment <= self.not_after
        )

    def sslib_key(self) -> SSlibKey:
        from securesystemslib.signer import SSlibKey

        return SSlibKey.from_crypto(
            load_public_key(self.public_key), keyid=self.key_id, scheme=ALGORITHM
        )

    def verify(self, signature_hex: str, data: bytes) -> bool:
        from securesystemslib.exceptions import UnverifiedSignatureError
        from securesystemslib.signer import Signature

        try:
            self.sslib_key().verify_signature(Signature(self.key_id, signature_hex), data)
        except UnverifiedSignatureError:
            return False
        return True


@dataclass(frozen=True)
class TrustStore:
    """The public keys whose signatures we accept, by key id."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)
    source: str = ""  # where they came from, for messages

    def __bool__(self) -> bool:
        return bool(self.keys)

    def get(self, kid: str) -> TrustedKey | None:
        return self.keys.get(kid)

    def pem_bundle(self) -> str:
        """Every trusted public key as concatenated PEM (what an endpoint's environment or an
        auditor gets: `LINEAGE_TRUSTED_KEYS`)."""
        return "".join(k.public_key for k in self.keys.values())

    def to_json(self) -> dict[str, Any]:
        return {"keys": [asdict(k) for k in self.keys.values()]}

    @classmethod
    def of(cls, keys: Iterable[TrustedKey], source: str) -> TrustStore:
        return cls({k.key_id: k for k in keys}, source)

    @classmethod
    def parse(cls, text: str, source: str) -> TrustStore:
        """PEM public keys (one or more) or a trust file's JSON."""
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
                keys = [TrustedKey(**entry) for entry in data["keys"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{source} is not a trust file ({exc.__class__.__name__})",
                    "pass PEM public keys or a trust.json written by `lineage keys`",
                ) from None
            for key in keys:  # a trust file cannot name a key by another key's id
                if key_id(load_public_key(key.public_key)) != key.key_id:
                    raise ConfigError(f"{source}: key {key.key_id[:16]} does not match its PEM")
            return cls.of(keys, source)
        blocks = [
            _PEM_BEGIN + chunk.split(_PEM_END)[0] + _PEM_END + "\n"
            for chunk in stripped.split(_PEM_BEGIN)[1:]
        ]
        if not blocks:
            raise ConfigError(
                f"{source} holds no public key",
                "pass a PEM public key (`lineage keys show` prints where yours is)",
            )
        return cls.of((TrustedKey.from_pem(block, "pem") for block in blocks), source)

    @classmethod
    def from_value(cls, value: str) -> TrustStore:
        """`LINEAGE_TRUSTED_KEYS`: PEM text, or the path of a PEM file or trust file."""
        if _PEM_BEGIN in value or value.strip().startswith("{"):
            return cls.parse(value, TRUSTED_KEYS_ENV)
        path = Path(value).expanduser()
        try:
            return cls.parse(path.read_text(), str(path))
        except OSError as exc:
            raise ConfigError(
                f"{TRUSTED_KEYS_ENV}: cannot read {path} ({exc.__class__.__name__})",
                "set it to PEM text or the path of a PEM or trust file",
            ) from None

    @classmethod
    def load(cls, home: Path, env: Mapping[str, str] | None = None) -> TrustStore:
        """`LINEAGE_TRUSTED_KEYS` when set, else the home's trust file (empty when none)."""
        env = os.environ if env is None else env
        configured = env.get(TRUSTED_KEYS_ENV, "").strip()
        if configured:
            return cls.from_value(configured)
        path = KeyPaths(home).trust
        if not path.is_file():
            return cls({}, str(path))
        return cls.parse(path.read_text(), str(path))


@dataclass(frozen=True)
class SigningKey:
    """A key that signs: the securesystemslib signer (file or KMS) and its public half."""

    signer: Signer
    key_id: str
    public_key: str  # PEM
    source: str  # the key file's path or kms:<id> (never the key)

    def sign(self, data: bytes) -> str:
        """The signature of `data` (DSSE's PAE), hex."""
        return str(self.signer.sign(data).signature)

    def trusted(self, not_before: str = "") -> TrustedKey:
        return TrustedKey(self.key_id, self.public_key, not_before=not_before, source=self.source)


def load_key_file(path: Path) -> SigningKey:
    """The signer of a PEM private key file (refused when others can read it)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the signing key {path} ({exc.__class__.__name__})",
            "create one with `lineage keys init`, or set LINEAGE_SIGNING_KEY_FILE",
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"the signing key {path} is readable by others (mode {mode & 0o777:o})",
            f"chmod 600 {path}",
        )
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key ({exc.__class__.__name__})"
        ) from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise ConfigError(
            f"{path} is not an ECDSA P-256 key", "create one with `lineage keys init`"
        )
    from securesystemslib.signer import CryptoSigner, SSlibKey

    public = private.public_key()
    kid = key_id(public)
    sslib = SSlibKey.from_crypto(public, keyid=kid, scheme=ALGORITHM)
    return SigningKey(CryptoSigner(private, sslib), kid, public_pem(public), str(path))


def kms_public_key(kms_key_id: str, client: Any = None) -> ec.EllipticCurvePublicKey:
    """The public half of a KMS signing key (`kms:GetPublicKey`)."""
    import boto3

    kms = client or boto3.client("kms")
    described = kms.get_public_key(KeyId=kms_key_id)
    spec = described.get("KeySpec") or described.get("CustomerMasterKeySpec")
    if spec not in (None, "ECC_NIST_P256"):
        raise ConfigError(
            f"KMS key {kms_key_id} is {spec}, not ECC_NIST_P256",
            "create an asymmetric SIGN_VERIFY key with KeySpec ECC_NIST_P256",
        )
    key = serialization.load_der_public_key(described["PublicKey"])
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"KMS key {kms_key_id} is not an elliptic-curve key")
    return key


def load_kms_key(kms_key_id: str, client: Any = None) -> SigningKey:
    """A KMS asymmetric key as a signer: `kms:Sign` with the statement's SHA-256 digest."""
    from securesystemslib.signer import AWSSigner, SSlibKey

    public = kms_public_key(kms_key_id, client)
    kid = key_id(public)
    signer = AWSSigner(kms_key_id, SSlibKey.from_crypto(public, keyid=kid, scheme=ALGORITHM))
    if client is not None:
        signer.client = client
    return SigningKey(signer, kid, public_pem(public), f"kms:{kms_key_id}")


def signing_key_from_env(env: Mapping[str, str] | None = None) -> SigningKey | None:
    """What a job signs with: a KMS key id or the path of a key file, from its environment
    (None when neither is set: the job's output is then unsigned, and refused downstream)."""
    env = os.environ if env is None else env
    kms = env.get(SIGNING_KMS_ENV, "").strip()
    if kms:
        return load_kms_key(kms)
    path = env.get(SIGNING_KEY_FILE_ENV, "").strip()
    return load_key_file(Path(path)) if path else None


# -- the home's keys ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyPaths:
    """Where a LINEAGE_HOME keeps its keys."""

    home: Path

    @property
    def directory(self) -> Path:
        return self.home / KEYS_DIR

    @property
    def private(self) -> Path:
        return self.directory / PRIVATE_KEY_FILE

    @property
    def public(self) -> Path:
        return self.directory / PUBLIC_KEY_FILE

    @property
    def trust(self) -> Path:
        return self.directory / TRUST_FILE


@dataclass(frozen=True)
class KeyInfo:
    """What `lineage keys init|show|rotate` print."""

    key_id: str
    public_key: str  # the public key file's path
    private_key: str  # the private key file's path, or kms:<id>
    algorithm: str = ALGORITHM
    created: bool = False
    retired: list[str] = field(default_factory=list)  # key ids whose period closed now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def signing_key(home: Path, env: Mapping[str, str] | None = None) -> SigningKey:
    """The operator's signing key: KMS or a configured key file, else the home's key file
    (created on first use, as `lineage keys init` does)."""
    env = os.environ if env is None else env
    configured = signing_key_from_env(env)
    if configured is not None:
        return configured
    init_keys(home)
    return load_key_file(KeyPaths(home).private)


def init_keys(home: Path) -> KeyInfo:
    """Create the home's signing key and trust file, once (idempotent, safe when two
    commands start at the same moment: one key wins, both use it)."""
    paths = KeyPaths(home)
    created = False
    now = utc_now()  # before the key exists: it is valid from its creation on
    if not paths.private.exists():
        private_dir(paths.directory)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        write_private_once(paths.private, pem)
        created = True
    loaded = load_key_file(paths.private)
    if not paths.public.is_file() or paths.public.read_text() != loaded.public_key:
        _write_public(paths.public, loaded.public_key)
    trust = _read_trust(paths.trust)
    if loaded.key_id not in trust.keys:
        _write_trust(paths.trust, TrustStore.of([*trust.keys.values(), loaded.trusted(now)], ""))
    return KeyInfo(loaded.key_id, str(paths.public), str(paths.private), created=created)


def rotate_keys(home: Path) -> KeyInfo:
    """A new signing key from now on; the old one's validity closes now and its private
    half is deleted (statements it signed keep verifying against its public half)."""
    paths = KeyPaths(home)
    init_keys(home)
    old = load_key_file(paths.private)
    now = utc_now()
    trust = _read_trust(paths.trust)
    closed = [
        replace(k, not_after=now) if k.key_id == old.key_id and not k.not_after else k
        for k in trust.keys.values()
    ]
    _write_trust(paths.trust, TrustStore.of(closed, ""))
    paths.private.unlink()
    info = init_keys(home)
    return replace(info, retired=[old.key_id])


def trust_kms_key(home: Path, kms_key_id: str, client: Any = None) -> KeyInfo:
    """Add a KMS signing key's public half to the home's trust file (jobs on SageMaker sign
    with it: `lineage sagemaker pipeline --signing-kms-key-id`)."""
    public = kms_public_key(kms_key_id, client)
    entry = TrustedKey(key_id(public), public_pem(public), utc_now(), source=f"kms:{kms_key_id}")
    paths = KeyPaths(home)
    private_dir(paths.directory)
    trust = _read_trust(paths.trust)
    if entry.key_id not in trust.keys:
        _write_trust(paths.trust, TrustStore.of([*trust.keys.values(), entry], ""))
    return KeyInfo(entry.key_id, "", f"kms:{kms_key_id}")


def _read_trust(path: Path) -> TrustStore:
    return TrustStore.parse(path.read_text(), str(path)) if path.is_file() else TrustStore()


def _write_trust(path: Path, trust: TrustStore) -> None:
    _write_public(path, json.dumps(trust.to_json(), indent=1) + "\n")


def _write_public(path: Path, text: str) -> None:
    """A public file (a public key, the trust file): written atomically, readable by all."""
    write_private(path, text)
    path.chmod(0o644)
