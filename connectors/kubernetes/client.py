"""One cluster's API client: built from a kubeconfig or the pod's service account, the calls
the connector makes, and the watch that runs on its own thread.

Each connector owns its own `ApiClient` (never the module-global default configuration), so
one process can drive several clusters. Calls ask for `_preload_content=False` and parse the
wire JSON themselves: the mapping code then reads the documented fields
(https://kubernetes.io/docs/reference/kubernetes-api/) and a newer server's unknown fields or
values never trip the generated models' validation. Every call runs on the connector's
`Blocking` pool and is retried on `TransientError` by `connectors.retry.retrying`; urllib3's
own retries are off (`retries=False`), or it would silently honour Retry-After on GETs and
stack its retries under ours.

Every credential is registered with the shared redactor (`redaction`), so an API server
(or a proxy) that repeats it in an error cannot carry it into a message, a log or the
database: every user's token, password, client certificate and key in the kubeconfig (as
written and decoded) before it is loaded, what the loaded client holds, and the bearer token
each time a request asks for it (`_configuration`), which covers tokens an exec plugin or
the kubelet's rotation hands over later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import functools
import json
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.errors import AuthFailed, ConnectorError, TransientError
from connectors.kubernetes.errors import (
    Expired,
    Op,
    from_api_exception,
    from_connection_error,
)
from connectors.retry import Backoff, retrying
from connectors.threads import Blocking
from redaction import cap, redact, register

JsonDict = dict[str, Any]
Loader = Callable[[], Any]  # returns a kubernetes.client.ApiClient

CONNECT_TIMEOUT_S = 10.0
_MAX_PAGES = 10_000


def kubeconfig_loader(path: Path, context: str | None) -> Loader:
    def load() -> Any:
        from kubernetes import config

        if not path.is_file():  # the loader would say only "No configuration found"
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        _register_kubeconfig(path)
        cfg = _configuration()()
        cfg.retries = False
        return config.new_client_from_config(
            config_file=str(path), context=context, persist_config=False, client_configuration=cfg
        )

    return load


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster_loader(
    *,
    token_file: Path = SERVICE_ACCOUNT / "token",
    ca_file: Path = SERVICE_ACCOUNT / "ca.crt",
    environ: Mapping[str, str] | None = None,
) -> Loader:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token (re-read as the
    kubelet rotates it) and the cluster CA. The paths and environment are the standard ones;
    tests point them at a fake cluster."""

    def load() -> Any:
        from kubernetes import client
        from kubernetes.config.incluster_config import InClusterConfigLoader

        cfg = _configuration()()
        cfg.retries = False
        InClusterConfigLoader(
            token_filename=str(token_file),
            cert_filename=str(ca_file),
            environ=os.environ if environ is None else environ,
        ).load_and_set(cfg)
        return client.ApiClient(configuration=cfg)

    return load


@functools.cache
def _configuration() -> Any:
    """kubernetes-client's `Configuration`, registering each bearer token it hands out.

    Every request asks `get_api_key_with_prefix` for its Authorization value, after the
    refresh hook of an exec plugin or a rotated service-account token has run; made on
    first use, so the SDK is imported on the pool."""
    from kubernetes import client

    class RegisteringConfiguration(client.Configuration):  # type: ignore[misc]
        def get_api_key_with_prefix(self, identifier: str, alias: str | None = None) -> Any:
            key = super().get_api_key_with_prefix(identifier, alias)
            if isinstance(key, str):
                scheme, _, token = key.partition(" ")
                register(token if scheme.lower() == "bearer" else key, ephemeral=True)
            return key

    return RegisteringConfiguration


_USER_SECRETS = ("token", "password", "client-key-data", "client-certificate-data")
_USER_SECRET_FILES = ("tokenFile", "client-key", "client-certificate")


def _register_kubeconfig(path: Path) -> None:
    """Register every user's credentials in a kubeconfig, as written and decoded.

    The client loads a client certificate and key only for an https server, and only the
    current context's user, but the file holds them all and any may be echoed back."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # the loader says why, without the content
    users = doc.get("users") if isinstance(doc, dict) else None
    for entry in users if isinstance(users, list) else []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if not isinstance(user, dict):
            continue
        for name in _USER_SECRETS:
            value = user.get(name)
            if isinstance(value, str):
                register(value)
                if name.endswith("-data"):
                    register(_b64decode(value))
        for name in _USER_SECRET_FILES:
            file = user.get(name)
            if isinstance(file, str) and file:
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    register((path.parent / file).read_text(encoding="utf-8"))


def _b64decode(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=False).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _register_loaded(cfg: Any) -> None:
    """Register what the loaded configuration holds: token, certificate, key, password."""
    for value in getattr(cfg, "api_key", {}).values():
        if isinstance(value, str):
            scheme, _, token = value.partition(" ")
            register(token if scheme.lower() == "bearer" else value)
    register(getattr(cfg, "password", None))
    for name in ("cert_file", "key_file"):  # the client's own, written from `*-data`
        path = getattr(cfg, name, None)
        if isinstance(path, str) and path:
            try:
                register(Path(path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue


def _load_failure(exc: Exception) -> str:
    """Why a kubeconfig could not be loaded, without echoing any of its content."""
    from kubernetes.config import ConfigException

    if isinstance(exc, ConfigException):
        first = str(exc).splitlines()[0] if str(exc) else ""
        if first.startswith("exec:"):
            return "the exec credential plugin failed"
        return cap(redact(first), 200)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    # YAML errors quote the offending line, which may hold a token: name the kind only.
    return f"not a valid kubeconfig ({type(exc).__name__})"


@dataclass(frozen=True, slots=True)
class _Apis:
    client: Any
    core: Any
    batch: Any
    apps: Any
    authz: Any
    version: Any
    host: str


class WatchHandle:
    """Lets the event loop stop a watch that blocks on another thread."""

    def __init__(self, resource_version: str) -> None:
        self.resource_version = resource_version  # advanced by the watch thread
        self._stop = threading.Event()
        self._watch: Any = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the watch to end; shuts its socket down so a blocked read returns at once."""
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()


class KubeClient:
    """The calls the connector makes, on JSON, with errors translated and retried."""

    def __init__(
        self,
        *,
        site: str,
        namespace: str,
        loader: Loader,
        source: str,
        blocking: Blocking,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        request_timeout_s: float,
        page_size: int = 500,
    ) -> None:
        self.site = site
        self.namespace = namespace
        self._loader = loader
        self._source = source  # "kubeconfig <path> (context x)" or "in-cluster service account"
        self._blocking = blocking
        self._backoff = backoff
        self._sleep = sleep
        self._timeout = (CONNECT_TIMEOUT_S, request_timeout_s)
        self._page_size = page_size
        self._apis: _Apis | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Load the credentials and build the ApiClient (once; exec plugins may run here)."""
        async with self._lock:
            if self._apis is None:
                self._apis = await self._blocking.run(self._build)

    def _build(self) -> _Apis:
        from kubernetes import client

        try:
            api = self._loader()
        except Exception as exc:
            raise AuthFailed(
                f"cannot load credentials from {self._source}: {_load_failure(exc)}",
                site=self.site,
            ) from None
        _register_loaded(api.configuration)
        return _Apis(
            client=api,
            core=client.CoreV1Api(api),
            batch=client.BatchV1Api(api),
            apps=client.AppsV1Api(api),
            authz=client.AuthorizationV1Api(api),
            version=client.VersionApi(api),
            host=str(api.configuration.host),
        )

    def close(self) -> None:
        apis, self._apis = self._apis, None
        if apis is not None:
            apis.client.close()
            apis.client.rest_client.pool_manager.clear()

    # -- calls -------------------------------------------------------------------------

    async def version(self) -> JsonDict:
        return await self._call(Op("get", "/version"), lambda a: a.version.get_code(**self._opts()))

    async def list_nodes(self) -> list[JsonDict]:
        items, _ = await self._list(Op("list", "nodes"), lambda a, **kw: a.core.list_node(**kw))
        return items

    async def list_pods(
        self, *, field_selector: str | None = None, label_selector: str | None = None
    ) -> list[JsonDict]:
        """Pods of every namespace matching the selectors."""
        items, _ = await self._list(
            Op("list", "pods"),
            lambda a, **kw: a.core.list_pod_for_all_namespaces(
                field_selector=field_selector, label_selector=label_selector, **kw
            ),
        )
        return items

    async def list_namespaced_pods(self, *, label_selector: str) -> list[JsonDict]:
        items, _ = await self._list(
            Op("list", "pods", self.namespace),
            lambda a, **kw: a.core.list_namespaced_pod(
                self.namespace, label_selector=label_selector, **kw
            ),
        )
        return items

    async def read_namespace(self) -> JsonDict:
        return await self._call(
            Op("get", "namespaces"),
            lambda a: a.core.read_namespace(self.namespace, **self._opts()),
        )

    async def create_job(self, body: JsonDict) -> JsonDict:
        return await self._call(
            Op("create", "jobs.batch", self.namespace),
            lambda a: a.batch.create_namespaced_job(self.namespace, body, **self._opts()),
        )

    async def read_job(self, name: str) -> JsonDict:
        return await self._call(
            Op("get", "jobs.batch", self.namespace),
            lambda a: a.batch.read_namespaced_job(name, self.namespace, **self._opts()),
        )

    async def delete_job(self, name: str) -> None:
        """Delete a Job and (in the background) its pods; NotFound is left to the caller."""
        await self._call(
            Op("delete", "jobs.batch", self.namespace),
            lambda a: a.batch.delete_namespaced_job(
                name, self.namespace, propagation_policy="Background", **self._opts()
            ),
        )

    async def list_jobs(self, *, label_selector: str) -> tuple[list[JsonDict], str]:
        """Jobs in the namespace and the list's resourceVersion (to watch from)."""
        return await self._list(
            Op("list", "jobs.batch", self.namespace),
            lambda a, **kw: a.batch.list_namespaced_job(
                self.namespace, label_selector=label_selector, **kw
            ),
        )

    async def create_deployment(self, body: JsonDict) -> JsonDict:
        return await self._call(
            Op("create", "deployments.apps", self.namespace),
            lambda a: a.apps.create_namespaced_deployment(self.namespace, body, **self._opts()),
        )

    async def read_deployment(self, name: str) -> JsonDict:
        return await self._call(
            Op("get", "deployments.apps", self.namespace),
            lambda a: a.apps.read_namespaced_deployment(name, self.namespace, **self._opts()),
        )

    async def delete_deployment(self, name: str) -> None:
        """Delete a Deployment and (in the background) its ReplicaSet and pod; NotFound is
        left to the caller."""
        await self._call(
            Op("delete", "deployments.apps", self.namespace),
            lambda a: a.apps.delete_namespaced_deployment(
                name, self.namespace, propagation_policy="Background", **self._opts()
            ),
        )

    async def list_deployments(self, *, label_selector: str) -> tuple[list[JsonDict], str]:
        """Deployments in the namespace and the list's resourceVersion (to watch from)."""
        return await self._list(
            Op("list", "deployments.apps", self.namespace),
            lambda a, **kw: a.apps.list_namespaced_deployment(
                self.namespace, label_selector=label_selector, **kw
            ),
        )

    async def create_service(self, body: JsonDict) -> JsonDict:
        return await self._call(
            Op("create", "services", self.namespace),
            lambda a: a.core.create_namespaced_service(self.namespace, body, **self._opts()),
        )

    async def delete_service(self, name: str) -> None:
        """Delete a Service; NotFound is left to the caller."""
        await self._call(
            Op("delete", "services", self.namespace),
            lambda a: a.core.delete_namespaced_service(name, self.namespace, **self._opts()),
        )

    async def access_review(
        self, *, verb: str, group: str, resource: str, everywhere: bool = False
    ) -> JsonDict:
        """The `status` of a SelfSubjectAccessReview: may these credentials do this (in the
        namespace, or in every namespace)?"""
        attributes = {"verb": verb, "group": group, "resource": resource}
        if not everywhere:
            attributes["namespace"] = self.namespace
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        review = await self._call(
            Op("create", "selfsubjectaccessreviews.authorization.k8s.io"),
            lambda a: a.authz.create_self_subject_access_review(body, **self._opts()),
        )
        status: JsonDict = review.get("status") or {}
        return status

    # -- the watch (runs on the follower's own thread) ------------------------------------

    def watch_jobs(
        self,
        handle: WatchHandle,
        *,
        label_selector: str,
        timeout_s: int,
        deliver: Callable[[str, JsonDict], None],
    ) -> None:
        """Stream Job events (see `_watch`); blocking."""
        self._watch(
            handle,
            op=Op("watch", "jobs.batch", self.namespace),
            lister=lambda a: a.batch.list_namespaced_job,
            label_selector=label_selector,
            timeout_s=timeout_s,
            deliver=deliver,
        )

    def watch_deployments(
        self,
        handle: WatchHandle,
        *,
        label_selector: str,
        timeout_s: int,
        deliver: Callable[[str, JsonDict], None],
    ) -> None:
        """Stream Deployment events (see `_watch`); blocking."""
        self._watch(
            handle,
            op=Op("watch", "deployments.apps", self.namespace),
            lister=lambda a: a.apps.list_namespaced_deployment,
            label_selector=label_selector,
            timeout_s=timeout_s,
            deliver=deliver,
        )

    def _watch(
        self,
        handle: WatchHandle,
        *,
        op: Op,
        lister: Callable[[_Apis], Any],
        label_selector: str,
        timeout_s: int,
        deliver: Callable[[str, JsonDict], None],
    ) -> None:
        """Stream events from `handle.resource_version` until the server ends the watch
        (after `timeout_s`), the handle is stopped, or an error; blocking.

        Each event goes to `deliver(type, object)` before `handle.resource_version` moves
        past it; BOOKMARK events only move the version. A 410 raises `Expired`.
        """
        import urllib3
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        apis = self._apis
        if apis is None or handle.stopped:
            return
        # return_type "object": events stay the wire's dicts (no model validation that a
        # newer server's object could trip, which would fail the same event on every resume).
        stream = watch.Watch(return_type="object")
        handle._watch = stream
        try:
            for event in stream.stream(
                lister(apis),
                self.namespace,
                label_selector=label_selector,
                resource_version=handle.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_s,
                _request_timeout=(CONNECT_TIMEOUT_S, timeout_s + 30),
            ):
                if handle.stopped:
                    stream.stop()
                    break
                obj: JsonDict = event["raw_object"]
                if event["type"] != "BOOKMARK":
                    deliver(str(event["type"]), obj)
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    handle.resource_version = str(version)
        except ApiException as exc:
            raise from_api_exception(exc, op=op, site=self.site) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if handle.stopped:
                return
            raise from_connection_error(exc, op=op, site=self.site, host=apis.host) from exc
        except AttributeError as exc:
            translated = _masked(exc, op=op, site=self.site)
            if translated is None:
                raise
            raise translated from exc
        finally:
            handle._watch = None

    # -- plumbing ------------------------------------------------------------------------

    def _opts(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self._timeout}

    async def _call(self, op: Op, fn: Callable[[_Apis], Any]) -> JsonDict:
        await self.open()

        async def once() -> JsonDict:
            return await self._blocking.run(self._invoke, op, fn)

        return await retrying(
            once, backoff=self._backoff, what=f"{self.site}: {op}", sleep=self._sleep
        )

    def _invoke(self, op: Op, fn: Callable[[_Apis], Any]) -> JsonDict:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        apis = self._apis
        if apis is None:
            raise TransientError(f"{op}: the client is closed", site=self.site)
        try:
            resp = fn(apis)
            try:
                data = resp.data
            finally:
                resp.release_conn()
        except ApiException as exc:
            raise from_api_exception(exc, op=op, site=self.site) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise from_connection_error(exc, op=op, site=self.site, host=apis.host) from exc
        except AttributeError as exc:
            translated = _masked(exc, op=op, site=self.site)
            if translated is None:
                raise
            raise translated from exc
        try:
            decoded = json.loads(data) if data else {}
        except ValueError as exc:
            raise TransientError(f"{op}: the API server sent invalid JSON", site=self.site) from exc
        return decoded if isinstance(decoded, dict) else {}

    async def _list(
        self, op: Op, fn: Callable[..., Any], *, restarts: int = 3
    ) -> tuple[list[JsonDict], str]:
        """All pages of a list (limit/continue); restarts when a continue token expires."""
        for attempt in range(restarts):
            items: list[JsonDict] = []
            version = ""
            token: str | None = None
            try:
                for _ in range(_MAX_PAGES):
                    page = await self._call(op, self._page(fn, token))
                    items.extend(page.get("items") or [])
                    meta = page.get("metadata") or {}
                    version = version or str(meta.get("resourceVersion") or "")
                    token = meta.get("continue") or None
                    if token is None:
                        return items, version
            except Expired:
                if attempt + 1 >= restarts:
                    raise
        raise TransientError(f"{op}: the list did not finish", site=self.site)

    def _page(self, fn: Callable[..., Any], token: str | None) -> Callable[[_Apis], Any]:
        return lambda a: fn(a, limit=self._page_size, _continue=token, **self._opts())


def _masked(exc: AttributeError, *, op: Op, site: str) -> ConnectorError | None:
    """kubernetes-client turns a TLS failure into an ApiException with status 0 and no body,
    then fails on `e.body.decode` (api_client.py): the AttributeError hides the ApiException,
    which is its context. Translate that one; any other AttributeError is a bug (None)."""
    from kubernetes.client.exceptions import ApiException

    context = exc.__context__
    if isinstance(context, ApiException) and not context.status:
        return from_api_exception(context, op=op, site=site)
    return None
