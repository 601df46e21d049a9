"""`lineage demo`: the reference sample's scenario, end to end on the embedded stack.

Start the stack; publish and train v1.0 and v2.0 of a source; compare them; promote the
better one (by validation accuracy) to ``champion``; deploy it; send it held-out test images
read back from the DVC remote through the lineage chain itself; trace the deployed model;
reproduce v1.0's data ("the model of six months ago"). Every step is timed. Running it again
works: new tags, new registry versions, the endpoint replaced.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lineage import datarepo, manifest
from lineage.config import Settings
from lineage.dvcremote import DvcRemote
from lineage.errors import LineageError
from lineage.jobresult import TrainingResult
from lineage.ops.deploy import DeployResult, deploy, invoke
from lineage.ops.process import DEFAULT_REPO, ProcessOptions
from lineage.ops.train import PipelineResult, Promotion, TrainOptions, pipeline, promote
from lineage.query.compare import Comparison, compare
from lineage.query.reproduce import Reproduction, reproduce
from lineage.query.trace import Trace, trace
from lineage.storage import s3_client

# digits has 1,797 images: 5% would be ~90, too few to compare versions; CIFAR-10 takes the
# reference sample's own 5% and 10%.
DEFAULT_FRACTIONS = {"digits": (0.5, 1.0), "cifar10": (0.05, 0.10)}
CHAMPION = "champion"


@dataclass(frozen=True)
class DemoOptions:
    source: str = "digits"
    fractions: tuple[float, float] | None = None
    epochs: int = 5
    port: int = 8080
    repo: str = DEFAULT_REPO
    model_name: str | None = None
    images: int = 8

    @property
    def chosen_fractions(self) -> tuple[float, float]:
        if self.fractions is not None:
            return self.fractions
        return DEFAULT_FRACTIONS.get(self.source.split(":", 1)[0], (0.5, 1.0))


@dataclass
class Step:
    name: str
    seconds: float
    detail: str


@dataclass(frozen=True)
class Champion:
    """The promotion of the better version to `champion`, and why it was the better one."""

    promotion: Promotion
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {**self.promotion.to_json(), "reason": self.reason}


@dataclass(frozen=True)
class Prediction:
    """One held-out test image sent to the endpoint: its label, the answer, who answered."""

    file: str
    label: str
    predicted: str
    probability: float
    correct: bool
    model: str  # NAME/VERSION, as the endpoint's answer names it

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "label": self.label,
            "predicted": self.predicted,
            "probability": self.probability,
            "correct": self.correct,
            "model": self.model,
        }


@dataclass
class DemoResult:
    fractions: tuple[float, float]
    versions: dict[str, PipelineResult] = field(default_factory=dict)
    comparison: Comparison | None = None
    champion: Champion | None = None
    endpoint: DeployResult | None = None
    predictions: list[Prediction] = field(default_factory=list)
    trace: Trace | None = None
    reproduction: Reproduction | None = None
    evidence: OfflineCheck | None = None
    steps: list[Step] = field(default_factory=list)
    mlflow_ui: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "versions": {label: made.to_json() for label, made in self.versions.items()},
            "comparison": None if self.comparison is None else self.comparison.to_json(),
            "champion": {} if self.champion is None else self.champion.to_json(),
            "endpoint": {} if self.endpoint is None else self.endpoint.to_json(),
            "predictions": [p.to_json() for p in self.predictions],
            "trace": None if self.trace is None else self.trace.to_json(),
            "reproduction": None if self.reproduction is None else self.reproduction.to_json(),
            "evidence": None if self.evidence is None else self.evidence.to_json(),
            "steps": [s.__dict__ for s in self.steps],
            "mlflow_ui": self.mlflow_ui,
        }


class Reporter:
    """How the demo tells its story; the CLI prints, tests stay quiet."""

    def step(self, name: str) -> None: ...
    def done(self, name: str, result: Any) -> None: ...


T = TypeVar("T")


class Timeline:
    """Runs the demo's steps in order, timing each and telling the reporter."""

    def __init__(self, reporter: Reporter | None) -> None:
        self.reporter = reporter or Reporter()
        self.steps: list[Step] = []

    def run(self, name: str, action: Callable[[], T], detail: Callable[[T], str]) -> T:
        self.reporter.step(name)
        started = time.monotonic()
        value = action()
        self.steps.append(Step(name, round(time.monotonic() - started, 2), detail(value)))
        self.reporter.done(name, value)
        return value


def run_demo(  # long: the demo's steps in order, read as one story
    settings: Settings,
    options: DemoOptions,
    reporter: Reporter | None = None,
    *,
    stream: bool = False,
) -> DemoResult:
    from local.stack import stack_for

    v1_fraction, v2_fraction = options.chosen_fractions
    timeline = Timeline(reporter)
    result = DemoResult(fractions=(v1_fraction, v2_fraction), steps=timeline.steps)
    timed = timeline.run

    timed("stack up", lambda: stack_for(settings).up(), lambda s: "git, s3, mlflow healthy")

    def make_version(label: str, fraction: float) -> PipelineResult:
        return pipeline(
            settings,
            ProcessOptions(
                version=label, fraction=fraction, source=options.source, repo=options.repo
            ),
            TrainOptions(tag="", epochs=options.epochs, model_name=options.model_name),
            stream=stream,
        )

    for label, fraction in (("v1.0", v1_fraction), ("v2.0", v2_fraction)):
        made = timed(
            f"{label}: process + train ({fraction:.0%} of {options.source})",
            functools.partial(make_version, label, fraction),
            lambda r: (
                f"{model_ref(r.training.output)}, "
                f"best val {r.training.output.metrics['best_val_accuracy']:.4f}"
            ),
        )
        result.versions[label] = made
    v1, v2 = (result.versions[v].training.output for v in ("v1.0", "v2.0"))
    ref1, ref2 = model_ref(v1), model_ref(v2)
    result.comparison = timed(
        "compare v1.0 and v2.0", lambda: compare(settings, ref1, ref2), lambda c: c.summary
    )

    better, reason = choose_champion(v1, v2)
    result.champion = timed(
        f"promote {model_ref(better)} to {CHAMPION}",
        lambda: Champion(promote(settings, model_ref(better), CHAMPION), reason),
        lambda p: reason,
    )
    champion_ref = f"{better.model_name}@{CHAMPION}"
    endpoint = timed(
        f"deploy {champion_ref}",
        lambda: deploy(settings, champion_ref, port=options.port),
        lambda d: d.endpoint,
    )
    result.endpoint = endpoint
    images_dir = settings.home / "demo" / "held-out"
    result.predictions = timed(
        f"invoke with {options.images} held-out test images",
        lambda: _invoke_held_out(
            settings,
            settings.repo_url(options.repo),
            better.dvc_tag,
            images_dir,
            endpoint.endpoint,
            options.images,
        ),
        lambda p: f"{sum(x.correct for x in p)}/{len(p)} correct",
    )
    result.trace = timed(
        "trace the deployed model",
        lambda: trace(settings, endpoint=endpoint.endpoint),
        lambda t: "chain verified" if t.ok else "chain NOT verified",
    )
    result.reproduction = timed(
        f"reproduce {ref1} (v1.0) data",
        lambda: reproduce(settings, model=ref1),
        lambda r: (
            f"{r.files_verified} records re-hashed: " + ("identical" if r.ok else "DIFFERENT")
        ),
    )
    result.evidence = evidence_steps(timed, settings, champion_ref)
    result.mlflow_ui = settings.mlflow_uri
    return result


@dataclass(frozen=True)
class OfflineCheck:
    """An evidence bundle and what `lineage evidence verify` said of it, run as an auditor
    runs it: another process, an empty LINEAGE_HOME, no network where that can be arranged."""

    bundle: str
    public_key: str
    command: str
    ok: bool
    offline: str  # how the network was taken away ("unshare -n", or "not isolated: ...")
    checks: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def evidence_steps(timed: Any, settings: Settings, model: str) -> OfflineCheck:
    """The demo's last two steps: write the champion's evidence bundle, verify it offline."""
    from lineage.audit.evidence import write_bundle
    from lineage.ops.deploy import running_endpoints

    demo_dir = settings.home / "demo"
    bundle = demo_dir / "evidence.json"
    written = timed(
        f"write the evidence bundle of {model}",
        lambda: write_bundle(settings, model, bundle, endpoints=running_endpoints),
        lambda w: f"{w.path}: {w.statements} signed statements, log of {w.tree_size} leaves",
    )
    key = demo_dir / "signer.pub.pem"
    from lineage.attest.host import Evidence

    key.write_text(Evidence(settings).key.public_key)
    checked: OfflineCheck = timed(
        "verify the bundle offline (empty home, no network)",
        lambda: verify_offline(written.path, key),
        lambda c: ("evidence verified" if c.ok else "evidence NOT verified") + f" ({c.offline})",
    )
    return checked


def verify_offline(bundle: Path, key: Path) -> OfflineCheck:
    """`lineage evidence verify BUNDLE --key KEY` in a fresh process with nothing of ours:
    an empty LINEAGE_HOME and HOME, and no network (`unshare -n`, as root) when possible."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    argv = [sys.executable, "-m", "lineage", "evidence", "verify", str(bundle), "--key", str(key)]
    offline = "not isolated: unshare -n needs root"
    if os.geteuid() == 0 and shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            argv, offline = ["unshare", "-n", *argv], "unshare -n: no network"
    with tempfile.TemporaryDirectory(prefix="lineage-auditor-") as home:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "LINEAGE_HOME": f"{home}/.lineage"}
        done = subprocess.run(
            [*argv, "--json"], env=env, capture_output=True, text=True, timeout=300, check=False
        )
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise LineageError(
            f"the offline verification did not answer ({done.stderr.strip()[-300:]})"
        ) from None
    command = f"lineage evidence verify {bundle} --key {key}"
    return OfflineCheck(
        str(bundle), str(key), command, bool(result["ok"]), offline, result["checks"]
    )


def model_ref(trained: TrainingResult) -> str:
    """`NAME/VERSION` of the version a training job registered."""
    return f"{trained.model_name}/{trained.model_version}"


def choose_champion(v1: TrainingResult, v2: TrainingResult) -> tuple[TrainingResult, str]:
    """The version with the higher best validation accuracy; the newer one on a tie."""
    a = float(v1.metrics["best_val_accuracy"])
    b = float(v2.metrics["best_val_accuracy"])
    if a > b:
        return v1, f"v1.0 has the higher validation accuracy ({a:.4f} > {b:.4f})"
    if b > a:
        return v2, f"v2.0 has the higher validation accuracy ({b:.4f} > {a:.4f})"
    return v2, f"equal validation accuracy ({a:.4f}); the newer version wins the tie"


def _invoke_held_out(
    settings: Settings, repo_url: str, tag: str, dest: Path, endpoint: str, count: int
) -> list[Prediction]:
    """Send test-split images, read from the DVC remote by their manifest row."""
    paths = held_out_images(settings, repo_url, tag, dest, count)
    answers = invoke(endpoint, [path for path, _ in paths])
    predictions = []
    for (path, truth), answer in zip(paths, answers, strict=True):
        if answer["status"] != 200:
            raise LineageError(f"the endpoint refused {path.name}: {answer.get('error')}")
        predictions.append(
            Prediction(
                file=path.name,
                label=truth,
                predicted=answer["label"],
                probability=answer["probabilities"][answer["label"]],
                correct=answer["label"] == truth,
                model=f"{answer['lineage']['model_name']}/{answer['lineage']['model_version']}",
            )
        )
    return predictions


def held_out_images(
    settings: Settings, repo_url: str, tag: str, dest: Path, count: int
) -> list[tuple[Path, str]]:
    """Up to `count` test images of dataset `tag`, one label after another."""
    with tempfile.TemporaryDirectory(prefix="lineage-demo-") as tmp:
        repo_dir = Path(tmp) / "repo"
        datarepo.clone(repo_url, repo_dir, tag=tag)
        pointer = datarepo.read_pointer(repo_dir)
        remote = DvcRemote(s3_client(settings), datarepo.remote_url(repo_dir))
    entries = {e.relpath: e.md5 for e in remote.listing(pointer.md5)}
    manifest_bytes = remote.read(entries[manifest.MANIFEST_NAME])
    if manifest_bytes is None:
        raise LineageError("the dataset's manifest is missing from the remote")
    by_label: dict[str, list[manifest.ManifestRow]] = {}
    for row in manifest.parse(manifest_bytes.decode()):
        if row.split == "test":
            by_label.setdefault(row.label, []).append(row)
    chosen: list[manifest.ManifestRow] = []
    while len(chosen) < count and any(by_label.values()):
        for label in sorted(by_label):
            if by_label[label] and len(chosen) < count:
                chosen.append(by_label[label].pop(0))
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for row in chosen:
        data = remote.read(entries[row.file_path])
        if data is None:
            raise LineageError(f"test image {row.file_path} is missing from the remote")
        path = dest / f"{row.label}-{Path(row.file_path).name}"
        path.write_bytes(data)
        out.append((path, row.label))
    return out
