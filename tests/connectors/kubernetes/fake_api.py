"""A fake Kubernetes API server that speaks the real wire format, for the connector's tests.

An aiohttp server on 127.0.0.1 (a free port, plain HTTP) with bearer-token auth, in front
of a `FakeCluster`. It serves `/version`, nodes, pods (all namespaces or one, with label and
field selectors, limit and continue), namespaces, Jobs and apps/v1 Deployments (list,
create, get, delete with propagationPolicy, and watch: newline-delimited JSON events,
BOOKMARKs on request, ERROR 410 for a too-old resourceVersion), core/v1 Services (list,
create, get, delete) and SelfSubjectAccessReviews. Failures are `Status` objects
as the real server sends them. Hooks of its own play the API server's moods: throttling
(`throttle`: 429 with Retry-After, or 503), RBAC (`forbid`), revoked credentials
(`reject_credentials`), a proxy timing out after a write (`lose_responses`). Every request is
recorded (`requests`) so tests assert on what the client really sent.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.fake_cluster import (
    DEPLOYMENTS,
    DROP,
    END,
    JOBS,
    FakeCluster,
    Watcher,
)
from tests.connectors.kubernetes.selectors import matches_fields, matches_labels, parse_selector

JsonDict = dict[str, Any]


@dataclass(slots=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


class FakeKubernetes(FakeCluster):
    """A fake cluster and the API server in front of it."""

    def __init__(
        self, *, token: str, namespaces: tuple[str, ...] = ("gpu-broker", "team-a")
    ) -> None:
        super().__init__(namespaces)
        self.token = token
        self.git_version = "v1.31.2"
        self.requests: list[Recorded] = []
        self.forbidden: set[tuple[str, str]] = set()  # (verb, resource) answered 403
        self._throttled = 0
        self._throttle_code = 429
        self._lost = 0
        self._rejecting = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.ssl_context: ssl.SSLContext | None = None  # set before start: serve HTTPS

    # -- server ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)
        r.add_get("/api/v1/nodes", self._list_nodes)
        r.add_get("/api/v1/pods", self._list_pods)
        r.add_get("/api/v1/namespaces/{ns}/pods", self._list_pods)
        r.add_get("/api/v1/namespaces/{ns}", self._get_namespace)
        r.add_get("/apis/batch/v1/namespaces/{ns}/jobs", self._list_or_watch_jobs)
        r.add_post("/apis/batch/v1/namespaces/{ns}/jobs", self._create_job)
        r.add_get("/apis/batch/v1/namespaces/{ns}/jobs/{name}", self._get_job)
        r.add_delete("/apis/batch/v1/namespaces/{ns}/jobs/{name}", self._delete_job)
        deployments = "/apis/apps/v1/namespaces/{ns}/deployments"
        r.add_get(deployments, self._list_or_watch_deployments)
        r.add_post(deployments, self._create_deployment)
        r.add_get(deployments + "/{name}", self._get_deployment)
        r.add_delete(deployments + "/{name}", self._delete_deployment)
        r.add_get("/api/v1/namespaces/{ns}/services", self._list_services)
        r.add_post("/api/v1/namespaces/{ns}/services", self._create_service)
        r.add_get("/api/v1/namespaces/{ns}/services/{name}", self._get_service)
        r.add_delete("/api/v1/namespaces/{ns}/services/{name}", self._delete_service)
        r.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._access_review)
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.5, access_log=None, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(END)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- hooks ---------------------------------------------------------------------------

    def throttle(self, calls: int, *, code: int = 429) -> None:
        """Answer the next `calls` requests with 429 and Retry-After (or another code, such
        as 503 from an overloaded API server)."""
        self._throttled = calls
        self._throttle_code = code

    def lose_responses(self, calls: int) -> None:
        """The next `calls` writes (POST/DELETE) take effect, but the client gets a 504 (a
        proxy timed out after the API server committed)."""
        self._lost = calls

    def reject_credentials(self) -> None:
        self._rejecting = True

    def forbid(self, verb: str, resource: str) -> None:
        """RBAC denies `verb` on `resource` ("jobs.batch", "nodes", ...)."""
        self.forbidden.add((verb, resource))

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- middleware: record, authenticate, throttle, authorise ---------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body))
        # The scheme is case-insensitive, as the API server's bearer authenticator has it
        # (in-cluster config sends "bearer <token>").
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if self._rejecting or scheme.lower() != "bearer" or given != self.token:
            return _status(o.status(401, "Unauthorized", "Unauthorized"))
        if self._throttled > 0:
            self._throttled -= 1
            if self._throttle_code != 429:
                code = self._throttle_code
                return _status(o.status(code, "ServiceUnavailable", "the server is overloaded"))
            return _status(
                o.status(429, "TooManyRequests", "Too many requests, please try again later."),
                headers={"Retry-After": "1"},
            )
        verb, resource = _verb_resource(request)
        if (verb, resource) in self.forbidden:
            ns = request.match_info.get("ns")
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            return _status(
                o.status(
                    403,
                    "Forbidden",
                    f'{resource} is forbidden: User "system:serviceaccount:gpu-broker:broker" '
                    f'cannot {verb} resource "{resource.split(".")[0]}"{where}',
                )
            )
        response: web.StreamResponse = await handler(request)
        if self._lost > 0 and request.method in ("POST", "DELETE"):
            self._lost -= 1
            return _status(o.status(504, "Timeout", "the server was unable to return a response"))
        return response

    # -- handlers ------------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        major, minor, _ = self.git_version.lstrip("v").split(".")
        return web.json_response(
            {
                "major": major,
                "minor": minor,
                "gitVersion": self.git_version,
                "platform": "linux/amd64",
            }
        )

    async def _list_nodes(self, request: web.Request) -> web.Response:
        return self._list(request, "NodeList", "v1", list(self.nodes.values()))

    async def _list_pods(self, request: web.Request) -> web.Response:
        ns = request.match_info.get("ns")
        pods = [p for (pns, _), p in sorted(self.pods.items()) if ns is None or pns == ns]
        return self._list(request, "PodList", "v1", pods)

    async def _get_namespace(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        if ns not in self.namespaces:
            return _status(
                o.status(
                    404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces"
                )
            )
        return web.json_response({"kind": "Namespace", "apiVersion": "v1", **self.namespaces[ns]})

    async def _list_or_watch_jobs(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        if _truthy(request.query.get("watch")):
            return await self._watch(request, ns, JOBS, self.jobs)
        jobs = [j for (jns, _), j in sorted(self.jobs.items()) if jns == ns]
        return self._list(request, "JobList", "batch/v1", jobs)

    async def _create_job(self, request: web.Request) -> web.Response:
        body, code = self.add_job(await request.json(), request.match_info["ns"])
        return web.json_response(body, status=code)

    async def _get_job(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.jobs:
            return _not_found_job(name)
        return web.json_response(self.jobs[(ns, name)])

    async def _delete_job(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.jobs:
            return _not_found_job(name)
        uid = self.jobs[(ns, name)]["metadata"]["uid"]
        self.remove_job(ns, name, propagation=request.query.get("propagationPolicy", "Orphan"))
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": "batch", "kind": "jobs", "uid": uid},
            }
        )

    async def _list_or_watch_deployments(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        if _truthy(request.query.get("watch")):
            return await self._watch(request, ns, DEPLOYMENTS, self.deployments)
        items = [d for (dns, _), d in sorted(self.deployments.items()) if dns == ns]
        return self._list(request, "DeploymentList", "apps/v1", items)

    async def _create_deployment(self, request: web.Request) -> web.Response:
        body, code = self.add_deployment(await request.json(), request.match_info["ns"])
        return web.json_response(body, status=code)

    async def _get_deployment(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.deployments:
            return _not_found(name, "deployments", group="apps")
        return web.json_response(self.deployments[(ns, name)])

    async def _delete_deployment(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.deployments:
            return _not_found(name, "deployments", group="apps")
        uid = self.deployments[(ns, name)]["metadata"]["uid"]
        # A Deployment deleted without propagationPolicy orphans nothing: its default
        # (the GC's) is Background, unlike a batch/v1 Job's Orphan.
        propagation = request.query.get("propagationPolicy", "Background")
        self.remove_deployment(ns, name, propagation=propagation)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": "apps", "kind": "deployments", "uid": uid},
            }
        )

    async def _list_services(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        items = [v for (sns, _), v in sorted(self.services.items()) if sns == ns]
        return self._list(request, "ServiceList", "v1", items)

    async def _create_service(self, request: web.Request) -> web.Response:
        body, code = self.add_service(await request.json(), request.match_info["ns"])
        return web.json_response(body, status=code)

    async def _get_service(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.services:
            return _not_found(name, "services")
        return web.json_response(self.services[(ns, name)])

    async def _delete_service(self, request: web.Request) -> web.Response:
        """A Service's delete answers with the deleted object, as the real registry does."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.services:
            return _not_found(name, "services")
        return web.json_response(self.remove_service(ns, name))

    async def _access_review(self, request: web.Request) -> web.Response:
        review = await request.json()
        attrs = review["spec"]["resourceAttributes"]
        resource = attrs["resource"] + (f".{attrs['group']}" if attrs.get("group") else "")
        allowed = (attrs["verb"], resource) not in self.forbidden
        review["status"] = {"allowed": allowed}
        if not allowed:
            review["status"]["reason"] = "no RBAC policy matched"
        return web.json_response(review, status=201)

    # -- watch ---------------------------------------------------------------------------

    async def _watch(
        self,
        request: web.Request,
        ns: str,
        resource: str,
        objects: dict[tuple[str, str], JsonDict],
    ) -> web.StreamResponse:
        query = request.query
        selector = parse_selector(query.get("labelSelector", ""))
        since = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds", "1800"))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if since not in ("", "0") and int(since) < self.oldest_version:
            await resp.write(self.expired_line(since))
            await resp.write_eof()
            return resp
        watcher = Watcher(ns, selector, _truthy(query.get("allowWatchBookmarks")), resource)
        # Replay and subscribe with no await in between, so no event falls in a gap.
        if since in ("", "0"):
            for (ons, _), obj in sorted(objects.items()):
                if ons == ns and matches_labels(obj, selector):
                    watcher.queue.put_nowait(self.event_line("ADDED", obj))
        else:
            for line in self.history_since(int(since), watcher):
                watcher.queue.put_nowait(line)
        self.watchers.add(watcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is DROP:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if item is END:
                    break
                await resp.write(item)
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away (a closed connector)
        finally:
            self.watchers.discard(watcher)
        return resp

    def _list(
        self, request: web.Request, kind: str, api_version: str, items: list[JsonDict]
    ) -> web.Response:
        query = request.query
        try:
            labels = parse_selector(query.get("labelSelector", ""))
            fields = parse_selector(query.get("fieldSelector", ""))
        except ValueError as exc:
            return _status(o.status(400, "BadRequest", str(exc)))
        chosen = [i for i in items if matches_labels(i, labels) and matches_fields(i, fields)]
        offset = 0
        if query.get("continue"):
            offset = json.loads(base64.b64decode(query["continue"]))["offset"]
        limit = int(query.get("limit", "0")) or len(chosen) or 1
        page = chosen[offset : offset + limit]
        meta: JsonDict = {"resourceVersion": self.resource_version}
        if offset + limit < len(chosen):
            meta["continue"] = base64.b64encode(
                json.dumps({"offset": offset + limit}).encode()
            ).decode()
            meta["remainingItemCount"] = len(chosen) - offset - limit
        return web.json_response(
            {
                "kind": kind,
                "apiVersion": api_version,
                "metadata": meta,
                "items": copy.deepcopy(page),
            }
        )


def _truthy(value: str | None) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _status(body: JsonDict, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=body["code"], headers=headers)


def _not_found_job(name: str) -> web.Response:
    return _not_found(name, "jobs", group="batch")


def _not_found(name: str, resource: str, *, group: str = "") -> web.Response:
    qualified = f"{resource}.{group}" if group else resource
    details: dict[str, str] = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return _status(o.status(404, "NotFound", f'{qualified} "{name}" not found', **details))


def _verb_resource(request: web.Request) -> tuple[str, str]:
    """The RBAC verb and resource of a request, as the API server's authorizer sees them."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "version":
        return "get", "/version"
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    elif rest[:1] == ["namespaces"]:
        rest = ["namespaces", *rest[1:]]
    resource = rest[0] + (f".{group}" if group else "")
    named = len(rest) > 1
    verbs = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}
    if request.method in verbs:
        return verbs[request.method], resource
    if _truthy(request.query.get("watch")):
        return "watch", resource
    return ("get" if named else "list"), resource


def write_kubeconfig(
    path: Any,
    clusters: dict[str, tuple[str, str]],
    *,
    current: str,
    certificate_authority: str | None = None,
) -> None:
    """A kubeconfig with one context per entry: context name → (server URL, bearer token);
    `certificate_authority` (a CA file's path) makes every cluster verify against it."""
    import yaml

    def cluster(url: str) -> dict[str, str]:
        out = {"server": url}
        if certificate_authority is not None:
            out["certificate-authority"] = certificate_authority
        return out

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": cluster(url)} for n, (url, _) in clusters.items()],
        "users": [
            {"name": f"{n}-broker", "user": {"token": tok}} for n, (_, tok) in clusters.items()
        ],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": f"{n}-broker", "namespace": "gpu-broker"}}
            for n in clusters
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
