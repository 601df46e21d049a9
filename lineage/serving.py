"""What serves a model version on SageMaker, as plain data: the runtime finds it
(`lineage.sagemaker.endpoints.find_endpoints`), the audits read it (`lineage.audit.queries`).

In the core so that the audits can type what they are given without importing the SageMaker
runtime, which sits above them in the layers (the CLI passes the runtime's lister in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def endpoint_url(region: str, name: str) -> str:
    """The endpoint's runtime URL: how lineage records name a SageMaker endpoint (the deploy's
    OpenLineage output, the audits' endpoint lists)."""
    return f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{name}"


@dataclass(frozen=True)
class SageMakerEndpoint:
    """A SageMaker endpoint whose lineage tags name the model version it serves."""

    name: str
    arn: str
    status: str
    model: str  # NAME/VERSION, from the `lineage:model` tag
    region: str
    tags: Mapping[str, str] = field(default_factory=dict)  # its lineage:* tags

    @property
    def url(self) -> str:
        return endpoint_url(self.region, self.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arn": self.arn,
            "status": self.status,
            "model": self.model,
            "url": self.url,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class EndpointListing:
    """The lineage-tagged endpoints of one region, as the audits ask for them."""

    region: str
    endpoints: tuple[SageMakerEndpoint, ...]

    def of(self, model: str) -> list[SageMakerEndpoint]:
        return [e for e in self.endpoints if e.model == model]
