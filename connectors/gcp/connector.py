"""The GCP connector: a Compute Engine region whose GPU capacity the broker provisions.

It provisions and releases instances; their startup script joins them to a Kubernetes
cluster, and running jobs there is the Kubernetes connector's business, so this connector
lacks DISPATCH, CANCEL and FOLLOW (and the GPU-sharing abilities).

Provisioning picks the cheapest allowed machine type with the GPU model (per GPU-hour, the
spot price for spot requests) and tries the zones that offer it in the configured order.
A zone that is out of stock or out of quota is skipped for the rest of the request; when
every zone has failed the error lists them in `tried`. A request is all or nothing when
capacity runs out: the instances it started are deleted again. Other errors (throttling,
an expired credential) leave them in place, and retrying the request id returns the
instances found by its `gpu-broker-request` label instead of starting more.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from broker.domain.clock import Clock
from broker.domain.enums import Health, SiteKind
from broker.domain.fleet import Site
from broker.domain.jobs import Job, Placement
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
from connectors.gcp import catalog, mapping
from connectors.gcp.checks import run_checks
from connectors.gcp.client import ComputeApi, RegionInfo
from connectors.gcp.settings import GcpSettings, parse
from connectors.retry import Backoff
from connectors.settings import SiteSettings, site_from_settings
from connectors.threads import Blocking

if TYPE_CHECKING:
    from google.cloud import compute_v1

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Catalog:
    region: RegionInfo
    zones: tuple[str, ...]
    offers: tuple[catalog.Offering, ...]
    fetched_at: datetime


class GcpConnector(Connector):
    kind = SiteKind.GCP
    lacks = frozenset(Ability) - {Ability.PROVISION, Ability.SPOT}

    def __init__(
        self,
        *,
        settings: GcpSettings,
        site: Site,
        clock: Clock,
        blocking: Blocking,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._site = site
        self._clock = clock
        self._blocking = blocking
        self.api = ComputeApi(
            site=site.name,
            project=settings.project,
            credentials_file=settings.credentials_file,
            api_endpoint=settings.api_endpoint,
            blocking=blocking,
            backoff=backoff or Backoff(),
            sleep=sleep,
            request_timeout_s=settings.request_timeout_s,
            operation_timeout_s=settings.operation_timeout_s,
        )
        self._prices: catalog.PriceCatalog | None = None
        self._catalog: _Catalog | None = None
        self._closed = asyncio.Event()

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> GcpConnector:
        return cls(
            settings=parse(site, config_dir=context.config_dir),
            site=site_from_settings(site),
            clock=context.clock,
            blocking=context.blocking,
        )

    @property
    def site_name(self) -> str:
        return self._site.name

    @property
    def settings(self) -> GcpSettings:
        return self._settings

    def credentials(self) -> str:
        path = self._settings.credentials_file
        if path is None:
            return "application default credentials"
        return f"service-account key file {path}"

    async def close(self) -> None:
        self._closed.set()
        await self.api.close()

    # -- inventory ----------------------------------------------------------------------

    async def inventory(self) -> SiteInventory:
        cat = await self.offers()
        up = cat.region.status == "UP"
        site = replace(
            self._site,
            health=Health.HEALTHY if up else Health.DEGRADED,
            health_reason="" if up else f"region {cat.region.name} is {cat.region.status}",
        )
        now = self._clock.now()
        pools = tuple(
            catalog.pool(o, site=self.site_name, nodes=self._settings.max_nodes, now=now)
            for o in cat.offers
        )
        return SiteInventory(site=site, pools=pools)

    async def offers(self, *, refresh: bool = False) -> _Catalog:
        """The region's priced GPU shapes, listed again after `catalog_ttl_s`."""
        now = self._clock.now()
        cached = self._catalog
        if (
            cached is not None
            and not refresh
            and (now - cached.fetched_at).total_seconds() < self._settings.catalog_ttl_s
        ):
            return cached
        if self._prices is None:
            self._prices = await self._blocking.run(
                catalog.PriceCatalog.load, self._settings.price_catalog
            )
        region = await self.api.region(self._settings.region)
        zones = self._settings.zones or region.zones
        listed = await asyncio.gather(*(self.api.zone_types(z) for z in zones))
        offers = catalog.offerings(
            region=self._settings.region,
            zones=listed,
            prices=self._prices,
            allow=self._settings.machine_types,
        )
        self._catalog = _Catalog(region=region, zones=zones, offers=tuple(offers), fetched_at=now)
        return self._catalog

    # -- capacity -----------------------------------------------------------------------

    async def provision(
        self, *, gpu_model: str, count: int, spot: bool, request_id: str
    ) -> list[CloudInstance]:
        if count < 1:
            raise ValueError("count must be at least 1")
        cat = await self.offers()
        ranked = catalog.cheapest(cat.offers, gpu_model_name=gpu_model, spot=spot)
        if not ranked:
            raise CapacityUnavailable(
                f"no allowed, priced machine type with {gpu_model} GPUs in {self._settings.region}",
                site=self.site_name,
            )
        offer = ranked[0]
        names = mapping.RequestNames(request_id)
        labels = self._labels(names, offer)
        found = await self.api.list_instances(mapping.label_filter(self._request_labels(names)))
        existing = {inst.name: inst for inst in found}
        script = await self._startup_script()
        zones = [z for z in cat.zones if z in offer.zones]
        tried: list[str] = []
        reasons: list[str] = []
        result: list[compute_v1.Instance] = []
        for index in range(count):
            name = names.instance(index)
            inst = existing.get(name)
            while inst is None and zones:
                zone = zones[0]
                spec = mapping.InstanceSpec(
                    name=name,
                    zone=zone,
                    offer=offer,
                    spot=spot,
                    labels=labels,
                    startup_script=script,
                )
                try:
                    inst = await self._create(spec, names=names)
                except CapacityUnavailable as exc:
                    tried.append(zone)
                    reasons.append(str(exc).removeprefix(f"{self.site_name}: "))
                    zones.pop(0)
            if inst is None:
                await self._roll_back(result + [i for i in found if i not in result])
                raise CapacityUnavailable(
                    f"no zone could start {offer.key} ({count} needed): " + "; ".join(reasons),
                    site=self.site_name,
                    tried=tried,
                )
            result.append(inst)
        return [mapping.cloud_instance(i, site=self.site_name) for i in result]

    async def _create(
        self, spec: mapping.InstanceSpec, *, names: mapping.RequestNames
    ) -> compute_v1.Instance:
        """Insert one instance and wait for it; an existing one of this request is reused.

        The insert's `requestId` is fresh per attempt in a zone and kept across our retries
        of that call, so a retry after a lost response does not insert twice; across
        provision calls the instance name and labels do that job.
        """
        body = mapping.instance_body(spec, self._shape())
        what = f"insert {spec.zone}/{spec.name}"
        try:
            op = await self.api.insert(zone=spec.zone, body=body, request_id=str(uuid.uuid4()))
            await self.api.finish(op, zone=spec.zone, what=what)
        except Conflict:
            log.info("%s: %s already exists; checking it is ours", self.site_name, spec.name)
        inst = await self.api.get_instance(zone=spec.zone, name=spec.name)
        labels = inst.labels
        if any(labels.get(k) != v for k, v in self._request_labels(names).items()):
            raise Conflict(
                f"instance {spec.zone}/{spec.name} exists but was not started by this "
                "request (its labels differ)",
                site=self.site_name,
            )
        return inst

    async def _roll_back(self, instances: list[compute_v1.Instance]) -> None:
        """Delete what a failed request started (best effort: leftovers keep their labels)."""
        outcomes = await asyncio.gather(
            *(self._delete(mapping.last_segment(i.zone), i.name) for i in instances),
            return_exceptions=True,
        )
        for inst, outcome in zip(instances, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("%s: could not delete %s: %s", self.site_name, inst.name, outcome)

    async def release(self, *, instance_ids: list[str]) -> None:
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return
        owned = {i.name: i for i in await self.api.list_instances(self._owner_filter())}
        strangers = [
            iid
            for iid in ids
            if iid not in owned
            and mapping.INSTANCE_NAME.match(iid)
            and await self.api.list_instances(mapping.name_filter(iid))
        ]
        if strangers:
            raise Conflict(
                f"instances {', '.join(strangers)} are not labelled "
                f"{mapping.OWNER_LABEL}={self._settings.owner} on this site; nothing released",
                site=self.site_name,
            )
        mine = [owned[i] for i in ids if i in owned]
        outcomes = await asyncio.gather(
            *(self._delete(mapping.last_segment(i.zone), i.name) for i in mine),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _delete(self, zone: str, name: str) -> None:
        try:
            op = await self.api.delete(zone=zone, name=name)
            await self.api.finish(op, zone=zone, what=f"delete {zone}/{name}")
        except NotFound:
            pass  # already gone

    async def instances(self) -> list[CloudInstance]:
        found = await self.api.list_instances(self._owner_filter())
        return sorted(
            (mapping.cloud_instance(i, site=self.site_name) for i in found), key=lambda c: c.id
        )

    # -- checks ---------------------------------------------------------------------------

    async def check(self) -> tuple[CheckItem, ...]:
        return await run_checks(self)

    # -- what this site does not do -------------------------------------------------------

    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        raise Unsupported(_NO_JOBS, site=self.site_name)

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        raise Unsupported(_NO_JOBS, site=self.site_name)

    async def adopt(self, *, job: Job, placement: Placement) -> None:
        raise Unsupported(_NO_JOBS, site=self.site_name)

    async def updates(self) -> AsyncIterator[StatusUpdate]:
        await self._closed.wait()
        return
        yield  # an async generator that ends at close without yielding

    # -- helpers ----------------------------------------------------------------------------

    def _owner_labels(self) -> dict[str, str]:
        return {
            mapping.OWNER_LABEL: self._settings.owner,
            mapping.SITE_LABEL: mapping.label_value(self.site_name),
        }

    def _owner_filter(self) -> str:
        return mapping.label_filter(self._owner_labels())

    def _request_labels(self, names: mapping.RequestNames) -> dict[str, str]:
        return {**self._owner_labels(), mapping.REQUEST_LABEL: names.label}

    def _labels(self, names: mapping.RequestNames, offer: catalog.Offering) -> dict[str, str]:
        return {
            **self._request_labels(names),
            mapping.POOL_LABEL: mapping.label_value(offer.key),
            mapping.ACCELERATOR_LABEL: offer.accelerator_type,
            mapping.GPUS_LABEL: str(offer.gpus),
        }

    def _shape(self) -> mapping.Shape:
        s = self._settings
        return mapping.Shape(
            source_image=s.source_image,
            network=s.network,
            subnetwork=s.subnetwork,
            external_ip=s.external_ip,
            disk_gb=s.disk_gb,
            disk_type=s.disk_type,
        )

    async def _startup_script(self) -> str | None:
        path = self._settings.startup_script_file
        if path is None:
            return None
        try:
            return await self._blocking.run(path.read_text, encoding="utf-8")
        except OSError as exc:
            raise ConnectorError(
                f"cannot read startup_script_file {path}: {exc.strerror}", site=self.site_name
            ) from exc


_NO_JOBS = (
    "a GCP site only provisions capacity; jobs on it run through its Kubernetes cluster's site"
)
