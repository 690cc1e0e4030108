"""An AWS region as a site the broker bursts into: GPU capacity as EC2 instances.

The connector only adds and removes capacity. Instances boot an image (or a launch template)
whose user data joins them to a Kubernetes cluster, and from then on the Kubernetes
connector dispatches and follows the jobs; this one lacks DISPATCH, CANCEL and FOLLOW.

Provisioning is idempotent twice over. First, the instances already tagged with the request
id are returned (a retry after a crash or a timeout finds them). Second, each RunInstances
carries a `ClientToken` derived from the request and zone, so a retry racing EC2's eventually
consistent describe calls still gets the first call's instances back. Zones are tried in
order; capacity refusals move on to the next zone and are all reported in the final
`CapacityUnavailable.tried`.
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from broker.domain.clock import Clock
from broker.domain.enums import SiteKind
from broker.domain.errors import ConfigError
from broker.domain.fleet import Site
from broker.domain.jobs import Job, Placement
from connectors.aws import catalog, checks, mapping
from connectors.aws.catalog import Offer, PriceCatalog
from connectors.aws.client import AwsApi, Launch
from connectors.aws.faults import Denied, ZoneFull
from connectors.aws.settings import AwsSettings, catalog_path, parse_settings, user_data_path
from connectors.base import (
    Ability,
    BuildContext,
    CheckItem,
    CloudInstance,
    Connector,
    SiteInventory,
    StatusUpdate,
)
from connectors.errors import CapacityUnavailable, Conflict, ConnectorError, NotFound, Unsupported
from connectors.retry import Backoff
from connectors.settings import SiteSettings, site_from_settings
from connectors.threads import Blocking

log = logging.getLogger(__name__)

_NO_UPDATES: tuple[StatusUpdate, ...] = ()


class AwsConnector(Connector):
    kind = SiteKind.AWS
    lacks = frozenset(
        {
            Ability.DISPATCH,
            Ability.CANCEL,
            Ability.FOLLOW,
            Ability.MIG,
            Ability.FRACTIONAL_GPU,
            Ability.GANG,
        }
    )

    def __init__(
        self,
        *,
        site: Site,
        settings: AwsSettings,
        prices: PriceCatalog,
        user_data: Path | None,
        clock: Clock,
        blocking: Blocking,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._site = site
        self._settings = settings
        self._region = settings.region or site.region
        self._prices = prices
        self._user_data = user_data
        self._clock = clock
        self._blocking = blocking
        self._api = AwsApi(
            settings=settings,
            region=self._region,
            site=site.name,
            blocking=blocking,
            backoff=backoff or Backoff(),
            sleep=sleep,
        )
        # Instance types and their GPUs are fixed facts of EC2: read once per connector.
        self._types: dict[str, mapping.GpuType] | None = None
        self._spot_denied: str | None = None
        self._closed = asyncio.Event()

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> AwsConnector:
        return cls.build(site=site, context=context)

    @classmethod
    def build(
        cls,
        *,
        site: SiteSettings,
        context: BuildContext,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> AwsConnector:
        """`from_settings` with the retry timing chosen by the caller."""
        parsed = parse_settings(site.connector, site=site)
        return cls(
            site=replace(site_from_settings(site), lacks=cls.lacks),
            settings=parsed,
            prices=PriceCatalog.load(catalog_path(parsed, config_dir=context.config_dir)),
            user_data=user_data_path(parsed, config_dir=context.config_dir),
            clock=context.clock,
            blocking=context.blocking,
            backoff=backoff,
            sleep=sleep,
        )

    @property
    def site_name(self) -> str:
        return self._site.name

    def credentials(self) -> str:
        s = self._settings
        if s.profile is not None:
            return f"AWS profile {s.profile!r}"
        if s.role_arn is not None:
            extra = ", with an external id" if s.external_id is not None else ""
            return f"role {s.role_arn} (session {s.session_name}{extra}) from the default chain"
        return "the AWS default credential chain"

    async def start(self) -> None:
        await self._api.open()

    async def close(self) -> None:
        self._closed.set()
        self._api.close()

    async def inventory(self) -> SiteInventory:
        now = self._clock.now()
        pools = tuple(
            catalog.pool(o, site=self._site.name, nodes=self._settings.max_nodes, now=now)
            for o in await self._offers()
        )
        return SiteInventory(site=self._site, pools=pools)

    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        raise Unsupported("EC2 capacity runs jobs through its Kubernetes site", site=self.site_name)

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        raise Unsupported("EC2 capacity runs jobs through its Kubernetes site", site=self.site_name)

    async def adopt(self, *, job: Job, placement: Placement) -> None:
        raise Unsupported("EC2 capacity runs jobs through its Kubernetes site", site=self.site_name)

    async def updates(self) -> AsyncIterator[StatusUpdate]:
        """Nothing to report (jobs are followed by the Kubernetes site); ends at `close`."""
        await self._closed.wait()
        for update in _NO_UPDATES:
            yield update

    async def provision(
        self, *, gpu_model: str, count: int, spot: bool, request_id: str
    ) -> list[CloudInstance]:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        types = await self._gpu_types()
        existing = await self._api.describe_instances(self._owned_filters(request=request_id))
        if existing:
            return [mapping.cloud_instance(r, site=self.site_name, types=types) for r in existing]
        market = "spot" if spot else "on-demand"
        offer = catalog.cheapest(await self._offers(), gpu_model=gpu_model, spot=spot)
        if offer is None:
            raise CapacityUnavailable(
                f"no {market} offer of {gpu_model} in {self._region}", site=self.site_name
            )
        tags = self._tags(offer, request_id=request_id)
        tried: list[str] = []
        for zone in offer.zones:
            try:
                raw = await self._api.run_instances(
                    instance_type=offer.gpu.instance_type,
                    zone=zone,
                    count=count,
                    spot=spot,
                    launch=await self._launch(zone),
                    tags=tags,
                    client_token=self._client_token(request_id, zone),
                )
            except ZoneFull as exc:
                log.info(
                    "%s: %s in %s: %s", self.site_name, offer.gpu.instance_type, zone, exc.code
                )
                tried.append(f"{zone}: {exc.code}")
                continue
            launched = [mapping.cloud_instance(r, site=self.site_name, types=types) for r in raw]
            log.info(
                "%s: launched %s (%s %s in %s) for %s",
                self.site_name,
                ", ".join(i.id for i in launched),
                market,
                offer.gpu.instance_type,
                zone,
                request_id,
            )
            return launched
        raise CapacityUnavailable(
            f"no {market} capacity for {count} x {offer.gpu.instance_type}: " + "; ".join(tried),
            site=self.site_name,
            tried=tried,
        )

    async def release(self, *, instance_ids: list[str]) -> None:
        """Terminate this site's instances among `instance_ids`. Any id carrying another
        owner's or site's tags refuses the whole call (nothing is terminated); ids not found
        or already terminated are skipped."""
        alive = await self._releasable(instance_ids)
        if not alive:
            return
        try:
            await self._api.terminate(alive)
        except NotFound:
            # One vanished between the describe and the terminate (EC2 rejects the whole
            # call then): terminate whatever is still there.
            alive = await self._releasable(alive)
            if alive:
                await self._api.terminate(alive)
        log.info("%s: terminating %s", self.site_name, ", ".join(alive))

    async def instances(self) -> list[CloudInstance]:
        types = await self._gpu_types()
        found = await self._api.describe_instances(self._owned_filters())
        return [mapping.cloud_instance(r, site=self.site_name, types=types) for r in found]

    async def check(self) -> tuple[CheckItem, ...]:
        try:
            who = await self._api.caller_identity()
        except ConnectorError as exc:
            return (CheckItem(name="credentials", ok=False, detail=str(exc)),)
        items = [
            CheckItem(name="credentials", ok=True, detail=f"account {who.account}, {who.arn}"),
            checks.price_catalog(self._prices, region=self._region),
        ]
        offers: list[Offer] = []
        try:
            self._types = None  # read the types again: the point is to call DescribeInstanceTypes
            offers = await self._offers()
            items.append(checks.instance_types(offers, region=self._region))
        except ConnectorError as exc:
            items.append(CheckItem(name="describe_instance_types", ok=False, detail=str(exc)))
        items.append(await checks.spot_history(self._api, offers, now=self._clock.now()))
        items.append(await checks.run_instances(self._api, offers, launch=self._launch))
        items.append(await checks.launch_source(self._api, self._settings, launch=self._launch))
        return tuple(items)

    async def _releasable(self, instance_ids: list[str]) -> list[str]:
        """The ids still alive and owned by this site; `Conflict` when any is someone else's."""
        if not instance_ids:
            return []
        found = await self._api.describe_instances(
            [{"Name": "instance-id", "Values": sorted(set(instance_ids))}]
        )
        alive, foreign = [], []
        for raw in found:
            if raw.get("State", {}).get("Name") == "terminated":
                continue
            tags = mapping.tags_of(raw)
            mine = tags.get(mapping.TAG_OWNER) == self._settings.owner
            if mine and tags.get(mapping.TAG_SITE) == self.site_name:
                alive.append(str(raw["InstanceId"]))
            else:
                foreign.append(str(raw["InstanceId"]))
        if foreign:
            raise Conflict(
                f"not releasing instances this site did not launch: {', '.join(sorted(foreign))}",
                site=self.site_name,
            )
        return sorted(alive)

    async def _offers(self) -> list[Offer]:
        types = await self._gpu_types()
        zones = await self._api.offerings(sorted(types))
        launchable = sorted(t for t in types if zones.get(t))
        return catalog.offers(
            types=types,
            zones=zones,
            prices=self._prices,
            region=self._region,
            spot=await self._spot_prices(launchable),
            preferred_zones=self._settings.zones,
            subnets=self._settings.subnet_ids,
        )

    async def _gpu_types(self) -> dict[str, mapping.GpuType]:
        if self._types is None:
            self._types = await self._api.gpu_types(self._settings.instance_types)
        return self._types

    async def _spot_prices(self, instance_types: list[str]) -> dict[str, dict[str, float]]:
        """Live spot prices; when IAM denies the call, none (the catalog's stand in)."""
        try:
            prices = await self._api.spot_prices(instance_types, now=self._clock.now())
        except Denied as exc:
            if self._spot_denied is None:
                log.warning("%s; using the price catalog's spot prices", exc)
            self._spot_denied = str(exc)
            return {}
        self._spot_denied = None
        return prices

    async def _launch(self, zone: str | None) -> Launch:
        """What to boot in `zone`; the user-data file is read now, so edits need no restart."""
        user_data = None
        if self._user_data is not None:
            try:
                user_data = await self._blocking.run(self._user_data.read_text, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"site {self.site_name}: cannot read user_data_file: {exc.strerror}"
                ) from exc
        return Launch(
            template=self._settings.launch_template,
            image_id=self._settings.image_id,
            user_data=user_data,
            subnet_id=self._settings.subnet_ids.get(zone) if zone else None,
            security_group_ids=self._settings.security_group_ids,
        )

    def _tags(self, offer: Offer, *, request_id: str) -> dict[str, str]:
        return {
            mapping.TAG_OWNER: self._settings.owner,
            mapping.TAG_SITE: self.site_name,
            mapping.TAG_REQUEST: request_id,
            mapping.TAG_POOL: catalog.pool_id(self.site_name, offer.gpu.instance_type),
            mapping.TAG_MODEL: offer.gpu.gpu_model,
            mapping.TAG_GPUS: str(offer.gpu.gpus),
            "Name": f"{self.site_name}-{offer.gpu.instance_type}",
        }

    def _client_token(self, request_id: str, zone: str) -> str:
        """≤ 64 ASCII characters, unique per (owner, site, request, zone)."""
        key = "\n".join((self._settings.owner, self.site_name, request_id, zone))
        return "gb-" + hashlib.sha256(key.encode()).hexdigest()[:48]

    def _owned_filters(self, *, request: str | None = None) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = [
            {"Name": f"tag:{mapping.TAG_OWNER}", "Values": [self._settings.owner]},
            {"Name": f"tag:{mapping.TAG_SITE}", "Values": [self.site_name]},
            {"Name": "instance-state-name", "Values": list(mapping.ALIVE_STATES)},
        ]
        if request is not None:
            filters.append({"Name": f"tag:{mapping.TAG_REQUEST}", "Values": [request]})
        return filters
