"""A fake Compute Engine API (compute/v1 REST JSON) on 127.0.0.1 for the connector's tests.

It speaks the wire format the real google-cloud-compute REST clients expect
(https://cloud.google.com/compute/docs/reference/rest/v1): regions.get with `quotas`,
paged machineTypes.list (with `accelerators`) and acceleratorTypes.list, projects.get,
instances insert/get/delete and aggregatedList (with a `filter` on labels and names),
zoneOperations get/wait returning Operation resources that go PENDING -> RUNNING -> DONE,
failed operations with `error.errors[]` and `httpErrorStatusCode`, and Google error bodies.
Auth is `fake_auth.FakeAuth`: every API call needs a valid Bearer token.

Hooks change its state the way the real service would: `exhaust(zone)` (inserts end with
ZONE_RESOURCE_POOL_EXHAUSTED*), `capacity[zone]` (room for N more instances),
`exceed_quota(metric)`, `unsupported_zones`, `revoke()`, `denied` (403), `throttle(n)`
(429 rateLimitExceeded), `unavailable(n)` (503 backendError), `slow_polls` (operations stay
RUNNING for N polls) and `lost` (an insert is applied but answered 503, as when a response
is lost on the way back).
"""

from __future__ import annotations

import copy
import itertools
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.connectors.gcp.fake_auth import FakeAuth
from tests.connectors.gcp.fake_resources import (
    ZONES,
    accelerator_json,
    google_error,
    machine_json,
    parse_filter,
    quota_error,
    stockout_error,
    unsupported_error,
)

NOW = "2026-11-23T10:00:00.000-08:00"


@dataclass
class FakeOperation:
    name: str
    zone: str
    kind: str  # "insert" | "delete"
    target: str
    status: str = "PENDING"
    slow_polls: int = 0
    error: dict[str, Any] | None = None  # {"code":..., "message":..., "http": 503, ...}
    on_done: Callable[[], None] | None = None


@dataclass
class FakeCompute:
    project: str = "broker-test"
    region: str = "us-central1"
    region_status: str = "UP"
    page_size: int = 500  # the API default; tests lower it to make clients follow pages
    auth: FakeAuth = field(default_factory=FakeAuth)
    zones: dict[str, dict[str, list[str]]] = field(default_factory=lambda: copy.deepcopy(ZONES))
    quotas: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"metric": "CPUS", "limit": 2400.0, "usage": 12.0},
            {"metric": "NVIDIA_A100_GPUS", "limit": 16.0, "usage": 0.0},
            {"metric": "PREEMPTIBLE_NVIDIA_A100_GPUS", "limit": 16.0, "usage": 0.0},
            {"metric": "NVIDIA_T4_GPUS", "limit": 4.0, "usage": 1.0},
            {"metric": "NVIDIA_L4_GPUS", "limit": 0.0, "usage": 0.0},
        ]
    )
    instances: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    operations: dict[str, FakeOperation] = field(default_factory=dict)
    inserted: list[dict[str, Any]] = field(default_factory=list)  # bodies as received
    calls: list[str] = field(default_factory=list)  # "METHOD /path?query" of API calls
    stockout: dict[str, str] = field(default_factory=dict)  # zone -> error code
    capacity: dict[str, int] = field(default_factory=dict)  # zone -> instances that still fit
    unsupported_zones: set[str] = field(default_factory=set)
    quota_metric: str | None = None
    denied: bool = False
    throttled: int = 0
    throttle_status: int = 429
    down: int = 0  # calls still to answer 503 backendError
    lost: int = 0
    slow_polls: int = 0
    images: set[str] = field(
        default_factory=lambda: {"projects/debian-cloud/global/images/family/debian-12"}
    )
    _request_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _runner: web.AppRunner | None = None
    port: int = 0

    # -- life cycle and hooks --------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"https://www.googleapis.com/compute/v1/projects/{self.project}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/token", self._token)
        p = "/compute/v1/projects/{project}"
        z = p + "/zones/{zone}"
        app.router.add_get(p, self._project)
        app.router.add_get(p + "/regions/{region}", self._region)
        app.router.add_get(z + "/machineTypes", self._machine_types)
        app.router.add_get(z + "/acceleratorTypes", self._accelerator_types)
        app.router.add_get(p + "/aggregated/instances", self._aggregated)
        app.router.add_post(z + "/instances", self._insert)
        app.router.add_get(z + "/instances/{name}", self._get)
        app.router.add_delete(z + "/instances/{name}", self._delete)
        app.router.add_get(z + "/operations/{op}", self._operation)
        app.router.add_post(z + "/operations/{op}/wait", self._operation)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def revoke(self) -> None:
        self.auth.revoked = True

    def throttle(self, calls: int, *, status: int = 429) -> None:
        """429 rateLimitExceeded, or 403 userRateLimitExceeded (Google uses both)."""
        self.throttled += calls
        self.throttle_status = status

    def unavailable(self, calls: int) -> None:
        self.down += calls

    def exhaust(self, zone: str, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED") -> None:
        self.stockout[zone] = code

    def exceed_quota(self, metric: str) -> None:
        self.quota_metric = metric

    def add_instance(self, zone: str, name: str, *, labels: dict[str, str], **extra: Any) -> None:
        """An instance made outside the broker (or by an earlier broker)."""
        self.instances.setdefault(zone, {})[name] = self._instance_json(
            zone,
            {"name": name, "labels": labels, "machineType": "zones/x/machineTypes/n1-standard-8"},
        ) | {"status": "RUNNING", **extra}

    def live(self, labels: dict[str, str]) -> set[str]:
        """Names of instances carrying all `labels` that are not TERMINATED."""
        return {
            name
            for zone in self.instances.values()
            for name, inst in zone.items()
            if inst["status"] != "TERMINATED"
            and all(inst.get("labels", {}).get(k) == v for k, v in labels.items())
        }

    def count(self, prefix: str) -> int:
        return sum(1 for c in self.calls if c.startswith(prefix))

    # -- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path == "/token":
            response: web.StreamResponse = await handler(request)
            return response
        self.calls.append(f"{request.method} {request.path_qs}")
        if self.auth.caller(request.headers.get("Authorization")) is None:
            return google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                "authError",
            )
        if self.denied:
            return google_error(
                403,
                f"Required 'compute.instances.list' permission for 'projects/{self.project}'",
                "forbidden",
            )
        if self.throttled > 0:
            self.throttled -= 1
            if self.throttle_status == 403:
                return google_error(
                    403, "User Rate Limit Exceeded", "userRateLimitExceeded", "usageLimits"
                )
            return google_error(429, "Rate Limit Exceeded", "rateLimitExceeded", "usageLimits")
        if self.down > 0:
            self.down -= 1
            return google_error(503, "Backend Error", "backendError")
        if request.match_info.get("project") != self.project:
            return google_error(404, "The resource 'projects/x' was not found", "notFound")
        zone = request.match_info.get("zone")
        if zone is not None and zone not in self.zones:
            return google_error(404, f"The resource 'zones/{zone}' was not found", "notFound")
        response = await handler(request)
        return response

    def _list(self, request: web.Request, kind: str, items: list[dict[str, Any]]) -> web.Response:
        start = int(request.query.get("pageToken") or 0)
        size = min(int(request.query.get("maxResults") or 500), self.page_size)
        body: dict[str, Any] = {"kind": kind, "items": items[start : start + size]}
        if start + size < len(items):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    def _instance_json(self, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        inst = dict(body)
        machine = str(body.get("machineType", "")).rsplit("/", 1)[-1]
        inst.update(
            kind="compute#instance",
            id=str(next(self._ids)),
            creationTimestamp=NOW,
            zone=f"{self.base}/zones/{zone}",
            machineType=f"{self.base}/zones/{zone}/machineTypes/{machine}",
            selfLink=f"{self.base}/zones/{zone}/instances/{body['name']}",
            status="PROVISIONING",
        )
        return inst

    def _op_json(self, op: FakeOperation) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": op.name.split("-")[1],
            "name": op.name,
            "zone": f"{self.base}/zones/{op.zone}",
            "operationType": op.kind,
            "targetLink": f"{self.base}/zones/{op.zone}/instances/{op.target}",
            "status": op.status,
            "user": "broker@broker-test.iam.gserviceaccount.com",
            "progress": {"PENDING": 0, "RUNNING": 50, "DONE": 100}[op.status],
            "insertTime": NOW,
            "selfLink": f"{self.base}/zones/{op.zone}/operations/{op.name}",
        }
        if op.status == "DONE" and op.error is not None:
            err = dict(op.error)
            http = err.pop("http")
            body["error"] = {"errors": [err]}
            body["httpErrorStatusCode"] = http
            body["httpErrorMessage"] = {503: "SERVICE UNAVAILABLE", 403: "FORBIDDEN"}.get(
                http, "BAD REQUEST"
            )
        return body

    def _new_op(self, zone: str, kind: str, target: str) -> FakeOperation:
        op = FakeOperation(
            name=f"operation-{next(self._ids)}-{kind}", zone=zone, kind=kind, target=target
        )
        op.slow_polls = self.slow_polls
        self.operations[op.name] = op
        return op

    # -- handlers -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        status, body = self.auth.grant(form)
        return web.json_response(body, status=status)

    async def _project(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "compute#project", "id": "4242", "name": self.project, "selfLink": self.base}
        )

    async def _region(self, request: web.Request) -> web.Response:
        name = request.match_info["region"]
        if name != self.region:
            return google_error(404, f"The resource 'regions/{name}' was not found", "notFound")
        return web.json_response(
            {
                "kind": "compute#region",
                "id": "1000",
                "name": name,
                "status": self.region_status,
                "zones": [f"{self.base}/zones/{z}" for z in self.zones],
                "quotas": self.quotas,
                "selfLink": f"{self.base}/regions/{name}",
            }
        )

    async def _machine_types(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        items = [
            machine_json(name, zone=zone, base=self.base) for name in self.zones[zone]["machines"]
        ]
        return self._list(request, "compute#machineTypeList", items)

    async def _accelerator_types(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        items = [
            accelerator_json(name, zone=zone, base=self.base)
            for name in self.zones[zone]["accelerators"]
        ]
        return self._list(request, "compute#acceleratorTypeList", items)

    async def _aggregated(self, request: web.Request) -> web.Response:
        match = parse_filter(request.query.get("filter", ""))
        if match is None:
            return google_error(400, "Invalid value for field 'filter'", "invalid")
        items: dict[str, Any] = {}
        for zone in self.zones:
            found = [i for i in self.instances.get(zone, {}).values() if match(i)]
            if found:
                items[f"zones/{zone}"] = {"instances": found}
            else:
                items[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
        return web.json_response({"kind": "compute#instanceAggregatedList", "items": items})

    async def _insert(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        body: dict[str, Any] = await request.json()
        self.inserted.append(body)
        key = (zone, request.query.get("requestId", ""))
        if key[1] and key in self._request_ids:  # the API drops a repeated requestId
            return web.json_response(self._op_json(self.operations[self._request_ids[key]]))
        name = str(body.get("name", ""))
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            return google_error(400, "Invalid value for field 'resource.name'", "invalid")
        machine = str(body.get("machineType", "")).rsplit("/", 1)[-1]
        if machine not in self.zones[zone]["machines"]:
            return google_error(
                400, f"Invalid value for field 'resource.machineType': '{machine}'", "invalid"
            )
        image = body.get("disks", [{}])[0].get("initializeParams", {}).get("sourceImage")
        if image not in self.images:
            return google_error(400, f"Invalid value for field 'sourceImage': '{image}'", "invalid")
        if name in self.instances.get(zone, {}):
            return google_error(
                409,
                f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                "already exists",
                "alreadyExists",
            )
        op = self._new_op(zone, "insert", name)
        if key[1]:
            self._request_ids[key] = op.name
        op.error = self._insert_error(zone, machine)
        if op.error is None:
            self.instances.setdefault(zone, {})[name] = self._instance_json(zone, body)
            if zone in self.capacity:
                self.capacity[zone] -= 1

            def running() -> None:
                inst = self.instances.get(zone, {}).get(name)
                if inst is not None:
                    inst["status"] = "RUNNING"

            op.on_done = running
        if self.lost > 0:
            self.lost -= 1
            return google_error(503, "Backend Error", "backendError")
        return web.json_response(self._op_json(op))

    def _insert_error(self, zone: str, machine: str) -> dict[str, Any] | None:
        if self.quota_metric is not None:
            return quota_error(self.quota_metric, region=self.region)
        if zone in self.unsupported_zones:
            return unsupported_error(machine, zone=zone)
        if zone in self.stockout or self.capacity.get(zone, 1) <= 0:
            code = self.stockout.get(zone, "ZONE_RESOURCE_POOL_EXHAUSTED")
            return stockout_error(code, zone=zone, project=self.project)
        return None

    async def _get(self, request: web.Request) -> web.Response:
        zone, name = request.match_info["zone"], request.match_info["name"]
        inst = self.instances.get(zone, {}).get(name)
        if inst is None:
            return google_error(
                404,
                f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                "was not found",
                "notFound",
            )
        return web.json_response(inst)

    async def _delete(self, request: web.Request) -> web.Response:
        zone, name = request.match_info["zone"], request.match_info["name"]
        inst = self.instances.get(zone, {}).get(name)
        if inst is None:
            return await self._get(request)
        inst["status"] = "STOPPING"
        op = self._new_op(zone, "delete", name)

        def gone() -> None:
            self.instances.get(zone, {}).pop(name, None)

        op.on_done = gone
        return web.json_response(self._op_json(op))

    async def _operation(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["op"])
        if op is None or op.zone != request.match_info["zone"]:
            return google_error(404, "The resource 'operation' was not found", "notFound")
        if op.status == "PENDING":
            op.status = "RUNNING"
        elif op.status == "RUNNING":
            if op.slow_polls > 0:
                op.slow_polls -= 1
            else:
                op.status = "DONE"
                if op.on_done is not None:
                    op.on_done()
        return web.json_response(self._op_json(op))
