"""The embedded local stack: git server, S3 store (SeaweedFS), MLflow server."""

from local.stack.stack import LocalStack, ServiceStatus, StackStatus

__all__ = ["LocalStack", "ServiceStatus", "StackStatus"]
