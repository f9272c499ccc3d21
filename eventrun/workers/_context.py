"""The ``context`` object handlers receive, shaped like awslambdaric's ``LambdaContext``.

Fields follow the Python runtime exactly: ``memory_limit_in_mb`` is a ``str``,
``identity`` is always a :class:`CognitoIdentity` (fields None when absent),
``client_context`` is a :class:`ClientContext` or None.
``get_remaining_time_in_millis()`` counts down to the same deadline at which the
daemon kills the worker (``time.monotonic()`` is system-wide on Linux, so daemon and
worker share it).

Imported by worker processes: stdlib only.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = [
    "Client",
    "ClientContext",
    "CognitoIdentity",
    "FunctionInfo",
    "LambdaContext",
    "function_arn",
]


def function_arn(region: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:000000000000:function:{name}"


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.cognito_identity_id: str | None = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id: str | None = data.get("cognitoIdentityPoolId")


class Client:
    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        for field in self.__slots__:
            setattr(self, field, data.get(field))


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data: dict[str, Any]) -> None:
        client = data.get("client")
        self.client: Client | None = Client(client) if isinstance(client, dict) else None
        self.custom: Any = data.get("custom")
        self.env: Any = data.get("env")


class FunctionInfo:
    """What every context of one worker shares (read once from the environment)."""

    __slots__ = (
        "function_name",
        "function_version",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(
        self,
        *,
        function_name: str,
        region: str,
        memory_mb: int | str,
        log_stream_name: str,
        function_version: str = "$LATEST",
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = function_arn(region, function_name)
        self.memory_limit_in_mb = str(memory_mb)
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> FunctionInfo:
        return cls(
            function_name=environ["AWS_LAMBDA_FUNCTION_NAME"],
            region=environ.get("AWS_REGION", "us-east-1"),
            memory_mb=environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
            log_stream_name=environ["AWS_LAMBDA_LOG_STREAM_NAME"],
            function_version=environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        )


class LambdaContext:
    """One invocation's context."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
        "tenant_id",
    )

    def __init__(
        self,
        info: FunctionInfo,
        request_id: str,
        deadline: float,
        client_context: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = info.function_name
        self.function_version = info.function_version
        self.invoked_function_arn = info.invoked_function_arn
        self.memory_limit_in_mb = info.memory_limit_in_mb
        self.log_group_name = info.log_group_name
        self.log_stream_name = info.log_stream_name
        self.identity = CognitoIdentity(identity)
        self.client_context = ClientContext(client_context) if client_context is not None else None
        self.tenant_id: str | None = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the invocation's deadline, never negative."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, msg: str) -> None:
        sys.stdout.write(msg)

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )
