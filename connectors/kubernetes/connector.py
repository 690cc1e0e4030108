"""The connector of a private Kubernetes cluster with NVIDIA GPUs.

Inventory comes from Nodes and Pods (see `inventory`), a placed job becomes a `batch/v1` Job
(see `manifest`), a service replica an `apps/v1` Deployment of one pod behind the service's
core/v1 Service on the site (see `replicas`), and their life is followed by list+watch (see
`follow`). Dispatch is idempotent through the object's deterministic name: a retried create
that meets 409 AlreadyExists adopts the Job (or Deployment) when it carries the same job id.
The external id names the kind: a Job is `gb-<id>`, a replica's Deployment `gbr-<id>`.
Cancelling a replica deletes its Deployment and, when no other Deployment of the service is
left on the site, the service's Service. Gang jobs need Kueue to admit all their pods at
once; without a `kueue_queue` the connector says it cannot run them.
Each inventory read also checks the broker's pods against their placements' nodes (see
`drift`): a pod on another node is logged once, a pinned pod whose node is gone sends its
job back to the queue (see `JobFollower.requeue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

from broker.domain.clock import Clock
from broker.domain.enums import SiteKind
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from connectors.base import (
    Ability,
    BuildContext,
    CheckItem,
    Connector,
    SiteInventory,
    StatusUpdate,
)
from connectors.errors import (
    AuthFailed,
    Conflict,
    ConnectorError,
    NotFound,
    TransientError,
    Unsupported,
)
from connectors.kubernetes import labels as L
from connectors.kubernetes.client import KubeClient, Loader, in_cluster_loader, kubeconfig_loader
from connectors.kubernetes.drift import Stray, findings
from connectors.kubernetes.follow import JobFollower, Target
from connectors.kubernetes.inventory import build_inventory, gpu_node
from connectors.kubernetes.manifest import build_job, job_id_of, run_of
from connectors.kubernetes.replicas import (
    build_deployment,
    build_service,
    is_replica,
    service_of,
    service_selector,
)
from connectors.kubernetes.settings import KubernetesSettings, parse
from connectors.retry import Backoff
from connectors.settings import SiteSettings, site_from_settings
from connectors.threads import Blocking

log = logging.getLogger(__name__)

_CLOSED = object()
# Pods that may hold GPUs: the API server filters these on `status.phase`.
_LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class KubernetesConnector(Connector):
    kind = SiteKind.KUBERNETES
    lacks = frozenset({Ability.PROVISION, Ability.SPOT})

    def __init__(
        self,
        *,
        site: Site,
        settings: KubernetesSettings,
        loader: Loader,
        clock: Clock,
        blocking: Blocking,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        page_size: int = 500,
    ) -> None:
        self._site = site
        self._settings = settings
        self._clock = clock
        if settings.in_cluster:
            self._source = "the in-cluster service account"
        else:
            context = f" (context {settings.context})" if settings.context else ""
            self._source = f"kubeconfig {settings.kubeconfig}{context}"
        self._client = KubeClient(
            site=site.name,
            namespace=settings.namespace,
            loader=loader,
            source=self._source,
            blocking=blocking,
            backoff=backoff or Backoff(),
            sleep=sleep,
            request_timeout_s=settings.request_timeout_s,
            page_size=page_size,
        )
        self._owner_labels = {L.OWNER_LABEL: settings.owner}
        self._updates: asyncio.Queue[StatusUpdate | object] = asyncio.Queue()
        self._streams = 0  # open `updates()` iterations; the follower runs while any is
        self._follower = JobFollower(
            client=self._client,
            owner_labels=self._owner_labels,
            clock=clock,
            backoff=backoff or Backoff(),
            sleep=sleep,
            watch_timeout_s=settings.watch_timeout_s,
            emit=self._updates.put_nowait,
            remove=self._remove,
        )
        self._pools: dict[str, GpuPool] = {}
        self._strays: set[Stray] = set()  # logged already, while they last
        self._tainted: set[tuple[str, str]] = set()  # (node, taint) logged, while they last
        self._closed = False

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> Self:
        parsed = parse(site, config_dir=context.config_dir)
        if parsed.in_cluster:
            loader = in_cluster_loader()
        else:
            assert parsed.kubeconfig is not None
            loader = kubeconfig_loader(parsed.kubeconfig, parsed.context)
        return cls(
            site=site_from_settings(site),
            settings=parsed,
            loader=loader,
            clock=context.clock,
            blocking=context.blocking,
        )

    @property
    def site_name(self) -> str:
        return self._site.name

    def credentials(self) -> str:
        return self._source

    def supports(self, ability: Ability) -> bool:
        if ability is Ability.GANG and not self._settings.kueue_queue:
            return False  # without Kueue nothing admits a gang's pods all at once
        return super().supports(ability)

    async def start(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._follower.stop()
        self._client.close()
        self._updates.put_nowait(_CLOSED)

    # -- inventory -----------------------------------------------------------------------

    async def inventory(self) -> SiteInventory:
        nodes = await self._client.list_nodes()
        pods = await self._client.list_pods(field_selector=_LIVE_PODS)
        inv = build_inventory(
            site=self._site,
            nodes=nodes,
            pods=pods,
            owner=self._settings.owner,
            prices=self._settings.price_per_gpu_hour,
            now=self._clock.now(),
            node_pools=self._settings.node_pools,
        )
        self._pools = {pool.id: pool for pool in inv.pools}
        self._log_tainted(inv.tainted)
        if self._follower.following:  # the replica following the site acts on drift
            await self._check_drift(nodes=nodes, pods=pods)
        return SiteInventory(site=inv.site, pools=inv.pools)

    def _log_tainted(self, tainted: tuple[tuple[str, str], ...]) -> None:
        """Say once per node and taint that a GPU node is left out for a taint no declared
        node pool tolerates (the site's health reason says it on every refresh)."""
        now = set(tainted)
        for node, taint in sorted(now - self._tainted):
            log.warning(
                "site %s: GPU node %s left out: taint %s is in no node pool's taints or "
                "tolerations (declare the node pool in the site's connector.node_pools)",
                self.site_name,
                node,
                taint,
            )
        self._tainted = now

    async def _check_drift(
        self, *, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]
    ) -> None:
        """Log pods found off their placement's nodes; requeue jobs whose node is gone."""
        found = findings(
            pods=pods, nodes=nodes, owner=self._settings.owner, expected=self._follower.expected()
        )
        for stray in found.strays:
            if stray not in self._strays:
                log.warning(
                    "%s: drift: job %s has pod %s on node %s, not on its placement's nodes %s",
                    self.site_name,
                    stray.job_id,
                    stray.pod,
                    stray.node,
                    ", ".join(stray.expected),
                )
        self._strays = set(found.strays)
        for stuck in found.stuck:
            node, why = stuck.down[0]
            gone = ", ".join(f"{n} ({w})" for n, w in stuck.down)
            requeued = await self._follower.requeue(
                stuck.job_id,
                reason=f"node_gone: {node}",
                detail=f"pod {stuck.pod} is pinned to a node that is gone: {gone}",
            )
            if requeued:
                log.warning(
                    "%s: job %s goes back to the queue: pod %s is pinned to %s (%s)",
                    self.site_name,
                    stuck.job_id,
                    stuck.pod,
                    node,
                    why,
                )

    async def _pool(self, pool_id: str) -> GpuPool:
        if pool_id not in self._pools:
            await self.inventory()
        pool = self._pools.get(pool_id)
        if pool is None:
            raise NotFound(f"pool {pool_id} is not in the cluster's inventory", site=self.site_name)
        return pool

    # -- jobs ----------------------------------------------------------------------------

    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        if job.spec.resources.nodes > 1 and not self.supports(Ability.GANG):
            raise Unsupported(
                "gang jobs need Kueue (set kueue_queue) to admit all their pods at once",
                site=self.site_name,
            )
        pool = await self._pool(placement.pool_id)
        replica = is_replica(job)
        name = L.replica_name(job.id) if replica else L.job_name(job.id)
        if replica:
            body = build_deployment(
                job=job, pool=pool, placement=placement, name=name, settings=self._settings
            )
            create, read = self._client.create_deployment, self._client.read_deployment
        else:
            body = build_job(
                job=job, pool=pool, placement=placement, name=name, settings=self._settings
            )
            create, read = self._client.create_job, self._client.read_job
        kind = body["kind"]
        try:
            created = await create(body)
        except Conflict:
            created = await self._existing(job, name, kind=kind, read=read)
        if replica:  # after the Deployment, so a racing cancel sees it (see _gc_service)
            await self._ensure_service(job)
        uid = (created.get("metadata") or {}).get("uid")
        self._follower.track(
            job_id=job.id,
            name=name,
            uid=str(uid) if uid else None,
            nodes=placement.node_names,
            run=placement.run or None,
            service=job.spec.service_id,
        )
        return name

    async def _existing(
        self, job: Job, name: str, *, kind: str, read: Callable[[str], Awaitable[dict[str, Any]]]
    ) -> dict[str, object]:
        """The Job (or Deployment) a create collided with, when it is this job's (a retried
        dispatch)."""
        try:
            existing = await read(name)
        except NotFound:
            raise TransientError(
                f"{kind} {name} was deleted while dispatching", site=self.site_name
            ) from None
        other = job_id_of(existing)
        if other != job.id:
            raise Conflict(
                f"{kind} {name} already exists for another job ({other})", site=self.site_name
            )
        if (existing.get("metadata") or {}).get("deletionTimestamp"):
            raise TransientError(
                f"an earlier {kind} {name} is still being deleted", site=self.site_name
            )
        return existing

    async def _ensure_service(self, job: Job) -> None:
        """The replica's service has its Service on the site (created once; 409 is fine)."""
        assert job.spec.service_id is not None
        body = build_service(
            job=job, name=L.service_name(job.spec.service_id), settings=self._settings
        )
        if body is not None:
            with contextlib.suppress(Conflict):
                await self._client.create_service(body)

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        known = self._follower.target(job_id)
        self._follower.cancelled(job_id)
        if external_id is not None:
            name = external_id
        elif known is not None:
            name = known.name
        else:
            name = L.job_name(job_id)
        if not L.is_replica_name(name):
            with contextlib.suppress(NotFound):  # already gone is fine
                await self._client.delete_job(name)
            return
        service = known.service if known is not None and known.service else None
        if service is None:  # not followed here (another replica dispatched it): read it
            with contextlib.suppress(NotFound):
                service = service_of(await self._client.read_deployment(name))
        with contextlib.suppress(NotFound):
            await self._remove(Target(job_id=job_id, name=name, service=service or ""))

    async def _remove(self, target: Target) -> None:
        """Delete a job's Job, or a replica's Deployment and then, when none of its
        service's Deployments is left on the site, the service's Service; NotFound when the
        Job or Deployment was gone already."""
        if target.service is None:
            await self._client.delete_job(target.name)
            return
        gone: NotFound | None = None
        try:
            await self._client.delete_deployment(target.name)
        except NotFound as exc:  # a lost answer, or someone else: its Service may remain
            gone = exc
        if target.service:
            await self._gc_service(target.service)
        if gone is not None:
            raise gone

    async def _gc_service(self, service_id: str) -> None:
        """Delete the service's Service once no Deployment of the service is left here.

        A dispatch racing this creates its Deployment before it ensures the Service, so
        either the list below sees the new Deployment or the dispatch re-creates the
        Service after this deleted it; only a delete landing between the dispatch's two
        calls leaves a replica without its Service until the service's next dispatch here.
        """
        left, _ = await self._client.list_deployments(
            label_selector=L.selector(service_selector(service_id, owner=self._settings.owner))
        )
        if any(not (d.get("metadata") or {}).get("deletionTimestamp") for d in left):
            return
        with contextlib.suppress(NotFound):
            await self._client.delete_service(L.service_name(service_id))

    async def adopt(self, *, job: Job, placement: Placement) -> None:
        replica = is_replica(job)
        default = L.replica_name(job.id) if replica else L.job_name(job.id)
        name = placement.external_id or default
        service = job.spec.service_id
        read = self._client.read_deployment if replica else self._client.read_job
        try:
            obj = await read(name)
        except NotFound:
            self._follower.vanished(job.id, name, run=placement.run or None, service=service)
            return
        if job_id_of(obj) != job.id or (placement.run and run_of(obj) not in (None, placement.run)):
            self._follower.vanished(job.id, name, run=placement.run or None, service=service)
            return
        uid = (obj.get("metadata") or {}).get("uid")
        self._follower.track(
            job_id=job.id,
            name=name,
            uid=str(uid) if uid else None,
            nodes=placement.node_names,
            run=placement.run or None,
            service=service,
        )
        if replica:
            await self._ensure_service(job)
        await self._follower.observe(obj, replica=replica)

    async def owned(self) -> dict[str, str]:
        """The broker's Jobs and replica Deployments on the site: job id → name."""
        owner = L.selector(self._owner_labels)
        jobs, _ = await self._client.list_jobs(label_selector=owner)
        try:
            deployments, _ = await self._client.list_deployments(label_selector=owner)
        except AuthFailed as exc:  # a Role from before services: the Jobs still reconcile
            log.warning("replicas not reconciled: %s", exc)  # the error names the site
            deployments = []
        found: dict[str, str] = {}
        for obj in (*jobs, *deployments):
            job_id = job_id_of(obj)
            if job_id is not None:
                found[job_id] = str((obj.get("metadata") or {}).get("name", ""))
        return found

    def updates(self) -> AsyncIterator[StatusUpdate]:
        """List and watch the broker's Jobs and Deployments from this call until the iteration
        ends: only the replica holding the site's follow lease watches; it sees every
        replica's objects."""
        self._streams += 1
        self._follower.start()
        return self._stream()

    async def _stream(self) -> AsyncIterator[StatusUpdate]:
        try:
            while True:
                item = await self._updates.get()
                if item is _CLOSED:
                    return
                assert isinstance(item, StatusUpdate)
                yield item
        finally:
            self._streams -= 1
            if not self._streams:  # the last reader stopped: stop watching
                await self._follower.stop()
                if self._streams and not self._closed:  # a new reader came meanwhile
                    self._follower.start()

    # -- check ---------------------------------------------------------------------------

    async def check(self) -> tuple[CheckItem, ...]:
        ns = self._settings.namespace
        return (
            await self._item("api", self._api_reachable()),
            await self._item("list nodes", self._nodes_visible()),
            await self._item("list pods", self._may("list", "", "pods", everywhere=True)),
            await self._item(f"create jobs in {ns}", self._may("create", "batch", "jobs")),
            await self._item(f"watch jobs in {ns}", self._may("watch", "batch", "jobs")),
            await self._item(f"delete jobs in {ns}", self._may("delete", "batch", "jobs")),
            await self._item(
                f"create deployments in {ns}", self._may("create", "apps", "deployments")
            ),
            await self._item(
                f"watch deployments in {ns}", self._may("watch", "apps", "deployments")
            ),
            await self._item(
                f"delete deployments in {ns}", self._may("delete", "apps", "deployments")
            ),
            await self._item(f"create services in {ns}", self._may("create", "", "services")),
            await self._item(f"delete services in {ns}", self._may("delete", "", "services")),
            await self._item(f"namespace {ns}", self._namespace_exists()),
        )

    async def _item(self, name: str, probe: Awaitable[tuple[bool, str]]) -> CheckItem:
        try:
            ok, detail = await probe
        except ConnectorError as exc:
            return CheckItem(name=name, ok=False, detail=str(exc))
        return CheckItem(name=name, ok=ok, detail=detail)

    async def _api_reachable(self) -> tuple[bool, str]:
        version = await self._client.version()
        return True, f"reachable, Kubernetes {version.get('gitVersion', '?')}"

    async def _nodes_visible(self) -> tuple[bool, str]:
        nodes = await self._client.list_nodes()
        with_gpus = sum(1 for node in nodes if gpu_node(node) is not None)
        return True, f"nodes visible: {len(nodes)}, with GPUs: {with_gpus}"

    async def _may(
        self, verb: str, group: str, resource: str, *, everywhere: bool = False
    ) -> tuple[bool, str]:
        status = await self._client.access_review(
            verb=verb, group=group, resource=resource, everywhere=everywhere
        )
        what = f"{verb} {resource}{'.' + group if group else ''}"
        if status.get("allowed"):
            return True, f"allowed to {what}"
        reason = f": {status['reason']}" if status.get("reason") else ""
        return False, f"forbidden: the credentials lack permission for {what}{reason}"

    async def _namespace_exists(self) -> tuple[bool, str]:
        ns = self._settings.namespace
        try:
            obj = await self._client.read_namespace()
        except NotFound:
            return False, f"namespace {ns} does not exist"
        phase = (obj.get("status") or {}).get("phase", "?")
        return phase == "Active", f"namespace {ns} is {phase}"
