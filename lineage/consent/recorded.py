"""The consent heads that datasets and runs recorded, read back from MLflow.

Every record-pattern processing and training run logs the head of the consent log its
snapshot was taken at (`consent_head_seq`, `consent_head_hash`). Those params live outside
the consent database, so a log truncated or rewritten below any of them is caught by
`lineage consent verify`, even by someone who also replaced the head file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lineage.consent.anchor import Head
from lineage.errors import LineageError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from lineage.attest.merkle import TreeHead

HEAD_SEQ = "consent_head_seq"
HEAD_HASH = "consent_head_hash"
LOG_ID = "consent_log_id"


def _runs_with(client: MlflowClient, filter_string: str, what: str) -> Iterator[Any]:
    """Every run, in every experiment (deleted ones too), that `filter_string` selects."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    try:
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        token = None
        while experiments:
            page = client.search_runs(
                experiments,
                filter_string=filter_string,
                run_view_type=ViewType.ALL,
                max_results=1000,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise LineageError(
            f"cannot read the {what} recorded in MLflow: {exc.message}",
            "check MLflow (`lineage stack status`), or pass --offline to check the database "
            "against its local anchors only",
        ) from None


def heads_recorded_in_mlflow(client: MlflowClient, log_id: str) -> list[Head]:
    """One `Head` per run that recorded a head of this consent log (`log_id`), in every
    experiment: runs filtered by another registry on the same MLflow are not its anchors."""
    heads: list[Head] = []
    for run in _runs_with(client, f"params.{LOG_ID} = '{log_id}'", "consent heads"):
        params = run.data.params
        try:
            seq = int(params[HEAD_SEQ])
        except (KeyError, ValueError):
            continue
        heads.append(Head(seq, str(params.get(HEAD_HASH, "")), f"MLflow run {run.info.run_id}"))
    return heads


TREE_HEAD = "tlog_head"  # the transparency log's signed head a job was given (a run param)


def tree_heads_recorded_in_mlflow(client: MlflowClient) -> list[TreeHead]:
    """The transparency log's signed heads that processing and training runs recorded when
    they started (every experiment): a log truncated or rewritten below any of them fails."""
    import json

    from lineage.attest.keys import AttestationError
    from lineage.attest.merkle import TreeHead

    heads: list[TreeHead] = []
    for run in _runs_with(client, f"params.{TREE_HEAD} LIKE '%log_id%'", "tree heads"):
        try:
            heads.append(
                TreeHead.from_json(json.loads(run.data.params[TREE_HEAD]), f"run {run.info.run_id}")
            )
        except (ValueError, KeyError, AttestationError) as exc:
            raise LineageError(
                f"run {run.info.run_id} recorded an unreadable tree head ({exc})",
                "its params were written by hand: investigate",
            ) from None
    return heads
