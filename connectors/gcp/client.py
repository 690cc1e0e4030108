"""The google-cloud-compute clients of one site: loaded lazily, called off the loop, retried.

Every SDK call goes through `ComputeApi._call`: it runs on the connector's bounded pool
(`connectors.threads.Blocking`), translates provider errors at the boundary
(`connectors.gcp.faults`) and retries only `TransientError`s with our full-jitter backoff.
The SDK's own retry is switched off (`retry=None`) so that there is one visible policy.

The clients use the REST transport, all with the same credentials and client options, so a
custom `api_endpoint` (a Private Service Connect endpoint, or the fake in tests) reaches
every call: the inserts and deletes use the `*_unary` methods, whose operations are awaited
here with `ZoneOperationsClient.wait` rather than through the SDK's extended-operation
helpers. `wait` returns when the operation is done or after about two minutes, so each call
gets a longer timeout than ordinary ones.

google.cloud.compute_v1 takes seconds to import, so it is imported on the pool the first
time a client is needed, never at module import and never on the event loop.

Credentials: a service-account key is used as a self-signed JWT by the compute clients
(they always set `always_use_jwt_access`), which proves nothing until a call is made, so
`token()` asks the key's `token_uri` for an OAuth access token to check the key for real.

Every secret is registered with the shared redactor (`redaction`) where it appears: the
key file's private key and key id when the file is read, and each bearer credential the key
mints (access token or self-signed JWT) when the credentials refresh (`_credentials`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from connectors.errors import AuthFailed, TransientError
from connectors.gcp.catalog import AcceleratorInfo, MachineTypeInfo, ZoneTypes
from connectors.gcp.credentials import load_credentials
from connectors.gcp.faults import operation_error, translate
from connectors.retry import Backoff, retrying
from connectors.threads import Blocking

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import compute_v1

T = TypeVar("T")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
WAIT_TIMEOUT_S = 150.0  # zoneOperations.wait answers within 2 minutes


@dataclass(frozen=True, slots=True)
class Quota:
    metric: str
    limit: float
    usage: float


@dataclass(frozen=True, slots=True)
class RegionInfo:
    name: str
    status: str
    zones: tuple[str, ...]
    quotas: tuple[Quota, ...]


@dataclass(slots=True)
class _Sdk:
    credentials: Credentials
    identity: str  # "service account x@y" or "application default credentials"
    instances: compute_v1.InstancesClient
    operations: compute_v1.ZoneOperationsClient
    machine_types: compute_v1.MachineTypesClient
    accelerator_types: compute_v1.AcceleratorTypesClient
    regions: compute_v1.RegionsClient
    projects: compute_v1.ProjectsClient

    def close(self) -> None:
        for client in (
            self.instances,
            self.operations,
            self.machine_types,
            self.accelerator_types,
            self.regions,
            self.projects,
        ):
            client.transport.close()  # type: ignore[no-untyped-call]  # unannotated upstream


class ComputeApi:
    """Compute Engine calls for one project, as awaitables that raise connector errors."""

    def __init__(
        self,
        *,
        site: str,
        project: str,
        credentials_file: Path | None,
        api_endpoint: str | None,
        blocking: Blocking,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        request_timeout_s: float = 60.0,
        operation_timeout_s: float = 900.0,
    ) -> None:
        self._site = site
        self.project = project
        self._credentials_file = credentials_file
        self._api_endpoint = api_endpoint
        self._blocking = blocking
        self._backoff = backoff
        self._sleep = sleep
        self._timeout = request_timeout_s
        self._operation_timeout = operation_timeout_s
        self._sdk: _Sdk | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            await self._blocking.run(sdk.close)

    # -- plumbing -----------------------------------------------------------------------

    async def _clients(self) -> _Sdk:
        async with self._lock:
            if self._sdk is None:
                self._sdk = await self._blocking.run(self._build)
            return self._sdk

    def _build(self) -> _Sdk:
        """Load credentials and create the clients (on the pool: file I/O and a slow import)."""
        from google.api_core.client_options import ClientOptions
        from google.auth import exceptions as auth
        from google.cloud import compute_v1

        try:
            creds, identity = load_credentials(self._credentials_file, scopes=SCOPES)
        except OSError as exc:
            raise AuthFailed(
                f"cannot read credentials_file {self._credentials_file}: {exc.strerror}",
                site=self._site,
            ) from exc
        except (auth.DefaultCredentialsError, ValueError) as exc:
            where = self._credentials_file or "application default credentials"
            raise AuthFailed(
                f"no usable credentials in {where} ({type(exc).__name__})", site=self._site
            ) from exc
        options = ClientOptions(api_endpoint=self._api_endpoint) if self._api_endpoint else None

        def make(cls: Callable[..., T]) -> T:
            return cls(credentials=creds, transport="rest", client_options=options)

        return _Sdk(
            credentials=creds,
            identity=identity,
            instances=make(compute_v1.InstancesClient),
            operations=make(compute_v1.ZoneOperationsClient),
            machine_types=make(compute_v1.MachineTypesClient),
            accelerator_types=make(compute_v1.AcceleratorTypesClient),
            regions=make(compute_v1.RegionsClient),
            projects=make(compute_v1.ProjectsClient),
        )

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn` on the pool, translate its errors, retry the transient ones."""

        async def once() -> T:
            try:
                return await self._blocking.run(fn)
            except Exception as exc:
                err = translate(exc, site=self._site, what=what)
                if err is None or err is exc:
                    raise
                raise err from exc

        return await retrying(once, backoff=self._backoff, what=what, sleep=self._sleep)

    # -- calls --------------------------------------------------------------------------

    async def identity(self) -> str:
        return (await self._clients()).identity

    async def token(self) -> str:
        """Obtain an OAuth access token (proves the key is live); returns who we are."""
        sdk = await self._clients()

        def refresh() -> None:
            from google.auth.transport.requests import Request

            request = Request()
            try:
                sdk.credentials.refresh(request)  # type: ignore[no-untyped-call]
            finally:
                request.session.close()

        await self._call("obtain an access token", refresh)
        return sdk.identity

    async def project_name(self) -> str:
        sdk = await self._clients()
        project = await self._call(
            f"get project {self.project}",
            lambda: sdk.projects.get(project=self.project, retry=None, timeout=self._timeout),
        )
        return project.name

    async def region(self, name: str) -> RegionInfo:
        sdk = await self._clients()
        region = await self._call(
            f"get region {name}",
            lambda: sdk.regions.get(
                project=self.project, region=name, retry=None, timeout=self._timeout
            ),
        )
        return RegionInfo(
            name=region.name,
            status=region.status,
            zones=tuple(sorted(z.rsplit("/", 1)[-1] for z in region.zones)),
            quotas=tuple(Quota(q.metric, q.limit, q.usage) for q in region.quotas),
        )

    async def zone_types(self, zone: str) -> ZoneTypes:
        """The machine types and accelerator types of one zone (every page)."""
        sdk = await self._clients()
        machines = await self._call(
            f"list machine types in {zone}",
            lambda: list(
                sdk.machine_types.list(
                    project=self.project, zone=zone, retry=None, timeout=self._timeout
                )
            ),
        )
        accelerators = await self._call(
            f"list accelerator types in {zone}",
            lambda: list(
                sdk.accelerator_types.list(
                    project=self.project, zone=zone, retry=None, timeout=self._timeout
                )
            ),
        )
        return ZoneTypes(
            zone=zone,
            machine_types=tuple(
                MachineTypeInfo(
                    name=m.name,
                    cpus=m.guest_cpus,
                    memory_gb=round(m.memory_mb / 1024, 2),
                    accelerator_type=m.accelerators[0].guest_accelerator_type
                    if m.accelerators
                    else None,
                    accelerator_count=m.accelerators[0].guest_accelerator_count
                    if m.accelerators
                    else 0,
                )
                for m in machines
            ),
            accelerators=tuple(
                AcceleratorInfo(name=a.name, max_per_instance=a.maximum_cards_per_instance)
                for a in accelerators
            ),
        )

    async def list_instances(self, filter_: str) -> list[compute_v1.Instance]:
        """Instances of every zone matching an aggregatedList filter."""
        from google.cloud import compute_v1

        sdk = await self._clients()
        request = compute_v1.AggregatedListInstancesRequest(project=self.project, filter=filter_)

        def run() -> list[compute_v1.Instance]:
            pager = sdk.instances.aggregated_list(
                request=request, retry=None, timeout=self._timeout
            )
            return [inst for _, scoped in pager for inst in scoped.instances]

        return await self._call("list instances", run)

    async def get_instance(self, *, zone: str, name: str) -> compute_v1.Instance:
        sdk = await self._clients()
        return await self._call(
            f"get instance {zone}/{name}",
            lambda: sdk.instances.get(
                project=self.project, zone=zone, instance=name, retry=None, timeout=self._timeout
            ),
        )

    async def insert(
        self, *, zone: str, body: compute_v1.Instance, request_id: str
    ) -> compute_v1.Operation:
        """Insert an instance and return the operation (not yet waited on)."""
        from google.cloud import compute_v1

        sdk = await self._clients()
        request = compute_v1.InsertInstanceRequest(
            project=self.project, zone=zone, instance_resource=body, request_id=request_id
        )
        return await self._call(
            f"insert instance {zone}/{body.name}",
            lambda: sdk.instances.insert_unary(request=request, retry=None, timeout=self._timeout),
        )

    async def delete(self, *, zone: str, name: str) -> compute_v1.Operation:
        sdk = await self._clients()
        return await self._call(
            f"delete instance {zone}/{name}",
            lambda: sdk.instances.delete_unary(
                project=self.project, zone=zone, instance=name, retry=None, timeout=self._timeout
            ),
        )

    async def finish(self, op: compute_v1.Operation, *, zone: str, what: str) -> None:
        """Wait for a zone operation to be DONE; raise its error, translated, if it failed."""
        from google.cloud import compute_v1

        sdk = await self._clients()
        done = compute_v1.Operation.Status.DONE
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._operation_timeout
        while op.status != done:
            if loop.time() >= deadline:
                raise TransientError(
                    f"{what}: operation {op.name} still {op.status.name} after "
                    f"{self._operation_timeout:g}s",
                    site=self._site,
                )
            wait = functools.partial(
                sdk.operations.wait,
                project=self.project,
                zone=zone,
                operation=op.name,
                retry=None,
                timeout=WAIT_TIMEOUT_S,
            )
            op = await self._call(f"{what}: wait for {op.name}", wait)
        err = operation_error(op, site=self._site, what=what)
        if err is not None:
            raise err
