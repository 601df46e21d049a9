"""What a failed AWS call means, and the one error a user reads about it.

Every boto3 failure falls in one of three kinds, decided here once so that no caller guesses
from an exception's text:

- NOT_FOUND: the thing asked about does not exist (a job, an endpoint, an S3 object). Only the
  caller knows whether that is an answer ("no job named X"), a reason to wait (an output not
  yet written) or a failure.
- PERMANENT: asking again cannot help (no permission, bad or expired credentials, an invalid
  request, a quota). The runner fails at once with the code, AWS's message and what to do,
  instead of retrying for minutes and then reporting a class name.
- TRANSIENT: throttling, AWS-side faults (5xx) and broken connections. Pollers retry these
  with backoff until their deadline (`lineage.sagemaker.polling`).

A code we do not know is PERMANENT: failing fast with AWS's own words is better than a
silent retry loop, and botocore's standard retry mode has already retried what it knows.
"""

from __future__ import annotations

import enum
import re

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
)

from lineage.errors import LineageError
from lineage.redact import redact_text

# What boto3 raises for a failed call; anything else is a bug in our code and propagates.
AWS_FAILURES: tuple[type[Exception], ...] = (ClientError, BotoCoreError)


class Kind(enum.Enum):
    NOT_FOUND = "not found"
    PERMANENT = "permanent"
    TRANSIENT = "transient"


NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFound",
        "ResourceNotFoundException",
        "NoSuchKey",
        "NoSuchBucket",
        "NotFound",
        "404",
    }
)
# SageMaker answers a Describe* of a missing job or endpoint with ValidationException ("Could
# not find endpoint ...", "Requested resource not found"): the message tells the two apart.
_NOT_FOUND_MESSAGE = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

_IAM = "see the README's least-privilege IAM table"
_CREDENTIALS = (
    "the AWS credentials are not valid here: check AWS_PROFILE / AWS_ACCESS_KEY_ID and the "
    "region (`aws sts get-caller-identity` shows who you are)"
)
_EXPIRED = "the AWS session expired: refresh it (e.g. `aws sso login`) and run again"
CODE_HINTS: dict[str, str] = {
    "AccessDenied": f"your identity lacks the IAM permission for this call ({_IAM})",
    "AccessDeniedException": f"your identity lacks the IAM permission for this call ({_IAM})",
    "UnrecognizedClientException": _CREDENTIALS,
    "InvalidClientTokenId": _CREDENTIALS,
    "InvalidAccessKeyId": _CREDENTIALS,
    "SignatureDoesNotMatch": _CREDENTIALS,
    "ExpiredToken": _EXPIRED,
    "ExpiredTokenException": _EXPIRED,
    "RequestExpired": _EXPIRED,
    "ValidationException": "AWS refused the request as invalid: check the names and values",
    "ResourceNotFound": "check the name and the region (--region / AWS_DEFAULT_REGION)",
    "ResourceNotFoundException": "check the name and the region (--region / AWS_DEFAULT_REGION)",
    "ResourceLimitExceeded": (
        "a SageMaker quota is reached (instances of this type, or running jobs): stop what "
        "you do not need or ask for more in the Service Quotas console"
    ),
}
_TRANSIENT_HINT = "AWS is throttling or unavailable, or the network is down: try again later"


def error_code(exc: BaseException) -> str:
    """AWS's error code of a ClientError; the exception's class name for anything else."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "ClientError"
    return exc.__class__.__name__


def aws_message(exc: BaseException) -> str:
    """What AWS (or botocore) said, redacted: error text can quote a presigned URL."""
    if isinstance(exc, ClientError):
        return redact_text(str(exc.response.get("Error", {}).get("Message", "")))
    return redact_text(str(exc))


def _status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status) if isinstance(status, int) else 0


def classify(exc: BaseException) -> Kind:
    """The kind of a boto3 failure (see the module docstring)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in NOT_FOUND_CODES:
            return Kind.NOT_FOUND
        if code == "ValidationException" and _NOT_FOUND_MESSAGE.search(aws_message(exc)):
            return Kind.NOT_FOUND
        if code in TRANSIENT_CODES or _status(exc) >= 500 or _status(exc) == 429:
            return Kind.TRANSIENT
        return Kind.PERMANENT
    if isinstance(exc, ConnectionError | HTTPClientError):
        # EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError
        return Kind.TRANSIENT
    return Kind.PERMANENT


class AwsError(LineageError):
    """An AWS call failed; the message names the call, AWS's code and message, and the hint
    says what to do. `code` and `kind` are there for callers that branch on them."""

    def __init__(
        self, message: str, hint: str | None = None, *, code: str = "", kind: Kind | None = None
    ) -> None:
        super().__init__(message, hint)
        self.code = code
        self.kind = Kind.PERMANENT if kind is None else kind


def _hint(exc: BaseException, code: str, kind: Kind, hint: str) -> str:
    """The code's own advice first, then the caller's, which names the action or resource
    involved. Credentials, region and malformed requests get only their own: the caller's
    permission hint would send the user the wrong way."""
    if isinstance(exc, NoCredentialsError):
        return "configure AWS credentials (AWS_PROFILE, `aws configure` or AWS_ACCESS_KEY_ID)"
    if isinstance(exc, NoRegionError):
        return "set AWS_DEFAULT_REGION (or pass --region where the command has it)"
    if isinstance(exc, ParamValidationError):
        return "the request is malformed before it was sent: please report this as a bug"
    own = _TRANSIENT_HINT if kind is Kind.TRANSIENT else CODE_HINTS.get(code, "")
    if own in (_CREDENTIALS, _EXPIRED) or not hint or hint == own:
        return own or hint
    return f"{own}; {hint}" if own else hint


def failure(what: str, exc: BaseException, hint: str = "", *, tries: int = 1) -> AwsError:
    """The error to raise for `exc`, a boto3 failure of the call described by `what`."""
    kind, code = classify(exc), error_code(exc)
    message = aws_message(exc)
    text = f"{what} failed: {code}" + (f": {message}" if message and message != code else "")
    if tries > 1:
        text += f" (still failing after {tries} tries)"
    return AwsError(text, _hint(exc, code, kind, hint) or None, code=code, kind=kind)
