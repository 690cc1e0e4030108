"""The EC2 and STS calls the connector makes, each off the loop, translated and retried.

Every SDK call runs through `Blocking.run` and `retrying`: botocore's own retries are
turned down to one attempt so the retry policy (full jitter, only `TransientError`) is the
broker's and visible in its logs. The SDK is imported when the first client is opened, never
at import time of this package, so a broker without AWS sites never loads it. Sessions,
credentials and client settings live in `session`; error translation in `faults`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from connectors.aws.faults import DRY_RUN_OK, translate
from connectors.aws.mapping import GpuType, gpu_type
from connectors.aws.session import client_config, open_session
from connectors.aws.settings import AwsSettings, LaunchTemplateRef
from connectors.errors import ConnectorError, NotFound
from connectors.retry import Backoff, retrying
from connectors.threads import Blocking

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

# NVIDIA GPUs on EC2 live only in the accelerated-computing families g* and p*; the
# instance-type filter takes wildcards, so the catalog read skips the ~900 other types.
GPU_FAMILY_PATTERNS = ("g*", "p*")
FILTER_CHUNK = 100  # values per filter, well under EC2's limit
LINUX = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """What an instance boots from: a launch template, or an AMI with user data."""

    template: LaunchTemplateRef | None
    image_id: str | None
    user_data: str | None
    subnet_id: str | None
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    account: str
    arn: str


class AwsApi:
    """One site's EC2 and STS clients; methods return plain values, never SDK objects."""

    def __init__(
        self,
        *,
        settings: AwsSettings,
        region: str,
        site: str,
        blocking: Blocking,
        backoff: Backoff,
        sleep: Sleep,
    ) -> None:
        self._settings = settings
        self._region = region
        self._site = site
        self._blocking = blocking
        self._backoff = backoff
        self._sleep = sleep
        self._session: Any = None
        self._config: Any = None
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Resolve the credential source and create the EC2 client (once)."""
        await self._ec2()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    async def caller_identity(self) -> Identity:
        sts = await self._sts()
        raw = await self._call("sts:GetCallerIdentity", sts.get_caller_identity)
        return Identity(account=str(raw.get("Account", "")), arn=str(raw.get("Arn", "")))

    async def gpu_types(self, allowed: Sequence[str]) -> dict[str, GpuType]:
        """GPU instance types the broker can schedule (`DescribeInstanceTypes`, paginated)."""
        patterns = list(allowed) or list(GPU_FAMILY_PATTERNS)
        found: dict[str, GpuType] = {}
        for chunk in _chunks(patterns):
            filters = [{"Name": "instance-type", "Values": chunk}]
            for raw in await self._pages(
                "describe_instance_types", "InstanceTypes", {"Filters": filters}
            ):
                parsed = gpu_type(raw)
                if parsed is not None:
                    found[parsed.instance_type] = parsed
        return found

    async def offerings(self, instance_types: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Instance type -> availability zones offering it (`DescribeInstanceTypeOfferings`)."""
        zones: dict[str, set[str]] = {}
        for chunk in _chunks(sorted(instance_types)):
            filters = [{"Name": "instance-type", "Values": chunk}]
            rows = await self._pages(
                "describe_instance_type_offerings",
                "InstanceTypeOfferings",
                {"LocationType": "availability-zone", "Filters": filters},
            )
            for row in rows:
                zones.setdefault(str(row["InstanceType"]), set()).add(str(row["Location"]))
        return {t: tuple(sorted(z)) for t, z in zones.items()}

    async def spot_prices(
        self, instance_types: Sequence[str], *, now: datetime
    ) -> dict[str, dict[str, float]]:
        """Instance type -> zone -> current Linux spot price (USD per instance-hour).

        StartTime = EndTime = now asks for the price in effect now in each zone.
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html
        """
        latest: dict[tuple[str, str], tuple[datetime, float]] = {}
        for chunk in _chunks(sorted(instance_types)):
            rows = await self._pages(
                "describe_spot_price_history",
                "SpotPriceHistory",
                {
                    "InstanceTypes": chunk,
                    "ProductDescriptions": list(LINUX),
                    "StartTime": now,
                    "EndTime": now,
                },
            )
            for row in rows:
                key = (str(row["InstanceType"]), str(row["AvailabilityZone"]))
                stamp, price = row["Timestamp"], float(row["SpotPrice"])
                if key not in latest or stamp > latest[key][0]:
                    latest[key] = (stamp, price)
        prices: dict[str, dict[str, float]] = {}
        for (instance_type, zone), (_, price) in latest.items():
            prices.setdefault(instance_type, {})[zone] = price
        return prices

    async def run_instances(
        self,
        *,
        instance_type: str,
        zone: str,
        count: int,
        spot: bool,
        launch: Launch,
        tags: Mapping[str, str],
        client_token: str,
    ) -> list[Mapping[str, Any]]:
        """Launch exactly `count` instances in `zone`; a repeated `client_token` returns the
        instances of the first call. Capacity refusals raise `ZoneFull`."""
        ec2 = await self._ec2()
        params = _run_params(
            instance_type=instance_type, zone=zone, count=count, spot=spot, launch=launch, tags=tags
        )
        raw = await self._call(
            "RunInstances",
            lambda: ec2.run_instances(ClientToken=client_token, **params),
            capacity=True,
        )
        return list(raw.get("Instances", []))

    async def can_run(self, *, instance_type: str, zone: str, launch: Launch) -> None:
        """RunInstances with DryRun: returns when IAM allows it, raises `Denied` otherwise."""
        ec2 = await self._ec2()
        params = _run_params(
            instance_type=instance_type, zone=zone, count=1, spot=False, launch=launch, tags={}
        )

        def dry_run() -> None:
            from botocore.exceptions import ClientError

            try:
                ec2.run_instances(DryRun=True, **params)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == DRY_RUN_OK:
                    return
                raise
            raise ConnectorError("RunInstances: DryRun launched instances", site=self._site)

        await self._call("RunInstances(DryRun)", dry_run)

    async def describe_instances(self, filters: Sequence[Mapping[str, Any]]) -> list[Any]:
        reservations = await self._pages(
            "describe_instances", "Reservations", {"Filters": list(filters)}
        )
        return [i for r in reservations for i in r.get("Instances", [])]

    async def terminate(self, instance_ids: Sequence[str]) -> None:
        ec2 = await self._ec2()
        for chunk in _chunks(list(instance_ids)):
            await self._call(
                "TerminateInstances", functools.partial(ec2.terminate_instances, InstanceIds=chunk)
            )

    async def image_exists(self, image_id: str) -> bool:
        ec2 = await self._ec2()
        try:
            raw = await self._call(
                "DescribeImages", lambda: ec2.describe_images(ImageIds=[image_id])
            )
        except NotFound:
            return False
        return bool(raw.get("Images"))

    async def launch_template_version(self, ref: LaunchTemplateRef) -> str | None:
        """The template's default version number, or None when it does not exist."""
        ec2 = await self._ec2()
        key = "LaunchTemplateNames" if ref.name is not None else "LaunchTemplateIds"
        try:
            raw = await self._call(
                "DescribeLaunchTemplates",
                lambda: ec2.describe_launch_templates(**{key: [ref.name or ref.id]}),
            )
        except NotFound:
            return None
        found = raw.get("LaunchTemplates", [])
        return str(found[0].get("DefaultVersionNumber", "")) if found else None

    async def _ec2(self) -> Any:
        return await self._client("ec2")

    async def _sts(self) -> Any:
        return await self._client("sts")

    async def _client(self, service: str) -> Any:
        """The service's client, created on first use (the session with the first client)."""
        async with self._lock:
            if service not in self._clients:
                if self._session is None:
                    self._session, self._config = await self._call(
                        "open session",
                        lambda: (
                            open_session(self._settings, region=self._region),
                            client_config(region=self._region, pool=self._blocking.max_workers),
                        ),
                    )
                session, config = self._session, self._config
                self._clients[service] = await self._call(
                    f"open {service} client",
                    lambda: session.create_client(
                        service, endpoint_url=self._settings.endpoint_url, config=config
                    ),
                )
            return self._clients[service]

    async def _pages(self, operation: str, key: str, params: Mapping[str, Any]) -> list[Any]:
        """Every item under `key` across the pages of a paginated operation."""
        ec2 = await self._ec2()
        what = "".join(word.title() for word in operation.split("_"))  # describe_x -> DescribeX
        return await self._call(what, functools.partial(_pages, ec2, operation, key, params))

    async def _call(self, what: str, fn: Callable[[], T], *, capacity: bool = False) -> T:
        async def once() -> T:
            try:
                return await self._blocking.run(fn)
            except Exception as exc:
                error = translate(exc, site=self._site, what=what, capacity=capacity)
                if error is None:
                    raise
                raise error from exc

        return await retrying(once, backoff=self._backoff, what=what, sleep=self._sleep)


def _run_params(
    *,
    instance_type: str,
    zone: str,
    count: int,
    spot: bool,
    launch: Launch,
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """The RunInstances request; https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html"""
    params: dict[str, Any] = {
        "InstanceType": instance_type,
        "MinCount": count,
        "MaxCount": count,
        "Placement": {"AvailabilityZone": zone},
    }
    if launch.template is not None:
        params["LaunchTemplate"] = launch.template.as_request()
    if launch.image_id is not None:
        params["ImageId"] = launch.image_id
    if launch.user_data is not None:
        params["UserData"] = launch.user_data  # boto3 base64-encodes it
    if launch.subnet_id is not None:
        params["SubnetId"] = launch.subnet_id
    if launch.security_group_ids:
        params["SecurityGroupIds"] = list(launch.security_group_ids)
    if tags:
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        params["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ]
    if spot:
        params["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    return params


def _pages(client: Any, operation: str, key: str, params: Mapping[str, Any]) -> list[Any]:
    """Every item under `key` across the operation's pages (runs in the thread pool)."""
    items: list[Any] = []
    for page in client.get_paginator(operation).paginate(**params):
        items.extend(page.get(key, []))
    return items


def _chunks(values: Sequence[str]) -> list[list[str]]:
    return [list(values[i : i + FILTER_CHUNK]) for i in range(0, len(values), FILTER_CHUNK)]
