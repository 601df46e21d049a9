"""The consent heads that datasets and runs recorded, read back from MLflow.

Every record-pattern processing and training run logs the head of the consent log its
snapshot was taken at (`consent_head_seq`, `consent_head_hash`). Those params live outside
the consent database, so a log truncated or rewritten below any of them is caught by
`lineage consent verify`, even by someone who also replaced the head file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lineage.consent.anchor import Head
from lineage.errors import LineageError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HEAD_SEQ = "consent_head_seq"
HEAD_HASH = "consent_head_hash"
LOG_ID = "consent_log_id"


def heads_recorded_in_mlflow(client: MlflowClient, log_id: str) -> list[Head]:
    """One `Head` per run that recorded a head of this consent log (`log_id`), in every
    experiment: runs filtered by another registry on the same MLflow are not its anchors."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    heads: list[Head] = []
    try:
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        token = None
        while experiments:
            page = client.search_runs(
                experiments,
                filter_string=f"params.{LOG_ID} = '{log_id}'",
                run_view_type=ViewType.ALL,
                max_results=1000,
                page_token=token,
            )
            for run in page:
                params = run.data.params
                try:
                    seq = int(params[HEAD_SEQ])
                except (KeyError, ValueError):
                    continue
                heads.append(
                    Head(seq, str(params.get(HEAD_HASH, "")), f"MLflow run {run.info.run_id}")
                )
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise LineageError(
            f"cannot read the consent heads recorded in MLflow: {exc.message}",
            "check MLflow (`lineage stack status`), or pass --offline to check the database "
            "against its head file only",
        ) from None
    return heads
