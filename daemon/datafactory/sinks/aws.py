"""What the AWS sinks share: settings, one aiobotocore client for the sink's life, and the
local stand-in (moto) hook."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from datafactory.config import SinkBase
from datafactory.sinks.base import ProvisionedConfig, Sink, SinkContext


def client(service: str, region: str, endpoint_url: str | None, local: bool = False) -> Any:
    """An aiobotocore client (an async context manager) for ``service``; ``local``: a
    stand-in that takes any credentials (moto)."""
    import aiobotocore.session

    kwargs: dict[str, Any] = {"region_name": region}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if local:
        kwargs.update(aws_access_key_id="x", aws_secret_access_key="x")
    return aiobotocore.session.get_session().create_client(service, **kwargs)


def bucket_args(bucket: str, region: str) -> dict[str, Any]:
    """CreateBucket's arguments (us-east-1 takes no location constraint)."""
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    return kwargs


class AwsConfig(ProvisionedConfig):
    provider: Literal["external", "local"] = Field(
        "external", description="local: start a moto server for the run"
    )
    endpoint_url: str | None = Field(None, description="custom endpoint (moto, LocalStack...)")
    region: str = Field("us-east-1", description="AWS region")


class AwsSink(Sink):
    """A sink talking to one AWS service through one client, opened on first use."""

    service: ClassVar[str]

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        assert isinstance(config, AwsConfig)
        self.aws = config
        self.endpoint_url = config.endpoint_url
        self.local = False
        self._client: Any = None
        self._client_cm: Any = None

    def local_service(self) -> str | None:
        return "aws" if self.aws.provider == "local" else None

    def use_local(self, address: str) -> None:
        self.endpoint_url = address
        self.local = True

    async def _ensure_client(self) -> Any:
        if self._client is None:
            self._client_cm = client(self.service, self.aws.region, self.endpoint_url, self.local)
            self._client = await self._client_cm.__aenter__()
        return self._client

    async def connect(self) -> None:
        await self._ensure_client()

    async def close(self) -> None:
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def release(self) -> None:
        await self.close()

    async def healthcheck(self) -> bool:
        return self._client is not None

    def reconnect_config(self) -> dict[str, Any]:
        return {**self.aws.model_dump(), "provider": "external", "endpoint_url": self.endpoint_url}
