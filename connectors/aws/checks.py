"""The items `broker check` reports for an AWS site: each call the broker needs, tried.

Launch permission is tried with `RunInstances` and `DryRun=True`: EC2 answers
`DryRunOperation` when IAM would allow the launch and `UnauthorizedOperation` when not,
without starting anything. A denied spot price history is a failed item, not an error: the
pools then carry the price catalog's spot prices.
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/CommonParameters.html (DryRun)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from broker.domain.errors import ConfigError
from connectors.aws.catalog import Offer, PriceCatalog
from connectors.aws.client import AwsApi, Launch
from connectors.aws.faults import Denied
from connectors.aws.settings import AwsSettings
from connectors.base import CheckItem
from connectors.errors import ConnectorError

LaunchIn = Callable[[str | None], Awaitable[Launch]]  # zone (None: any) -> what to boot


def price_catalog(prices: PriceCatalog, *, region: str) -> CheckItem:
    rows = prices.in_region(region)
    dates = sorted({p.snapshot for p in rows})
    detail = f"{len(rows)} instance types priced for {region}"
    return CheckItem(
        name="price_catalog",
        ok=bool(rows),
        detail=detail + (f" (snapshot {', '.join(dates)})" if dates else ""),
    )


def instance_types(offers: Sequence[Offer], *, region: str) -> CheckItem:
    return CheckItem(
        name="describe_instance_types",
        ok=bool(offers),
        detail=f"{len(offers)} priced GPU instance types offered in {region}",
    )


async def spot_history(api: AwsApi, offers: Sequence[Offer], *, now: datetime) -> CheckItem:
    names = [o.gpu.instance_type for o in offers[:1]]
    try:
        prices = await api.spot_prices(names, now=now)
    except Denied as exc:
        detail = f"{exc}; pools use the price catalog's spot prices"
        return CheckItem(name="spot_price_history", ok=False, detail=detail)
    except ConnectorError as exc:
        return CheckItem(name="spot_price_history", ok=False, detail=str(exc))
    zones = sum(len(z) for z in prices.values())
    return CheckItem(name="spot_price_history", ok=True, detail=f"{zones} zone prices read")


async def run_instances(api: AwsApi, offers: Sequence[Offer], *, launch: LaunchIn) -> CheckItem:
    """A DryRun of the cheapest offer in its first zone, with the real launch parameters."""
    if not offers:
        return CheckItem(name="run_instances", ok=False, detail="no GPU type to try")
    offer, zone = offers[0], offers[0].zones[0]
    try:
        await api.can_run(
            instance_type=offer.gpu.instance_type, zone=zone, launch=await launch(zone)
        )
    except (ConnectorError, ConfigError) as exc:
        return CheckItem(name="run_instances", ok=False, detail=str(exc))
    detail = f"DryRun of {offer.gpu.instance_type} in {zone} allowed"
    return CheckItem(name="run_instances", ok=True, detail=detail)


async def launch_source(api: AwsApi, settings: AwsSettings, *, launch: LaunchIn) -> CheckItem:
    """The launch template, or the AMI and a readable user-data file, exist."""
    template, image = settings.launch_template, settings.image_id
    name = "launch_template" if template is not None else "image"
    try:
        if template is not None:
            version = await api.launch_template_version(template)
            ref = template.name or template.id
            if version is None:
                return CheckItem(name=name, ok=False, detail=f"{ref} not found")
            detail = f"{ref} found (default version {version}, launching {template.version})"
            return CheckItem(name=name, ok=True, detail=detail)
        assert image is not None  # settings demand one of the two
        if not await api.image_exists(image):
            return CheckItem(name=name, ok=False, detail=f"{image} not found")
        user_data = (await launch(None)).user_data or ""
        size = len(user_data.encode())
        return CheckItem(name=name, ok=True, detail=f"{image} found; user data {size} B")
    except (ConnectorError, ConfigError) as exc:
        return CheckItem(name=name, ok=False, detail=str(exc))
