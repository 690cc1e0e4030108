"""Checking the configured sites' credentials and permissions (`broker check`, admin API).

Each site's connector verifies what it needs (credentials resolve, calls allowed) and
reports items; a check never raises for a provider's answer. Settings name credentials by
reference and connectors report only non-secret facts (an account id, a service-account
email, a context name), but a failed item's detail is the provider's error text, which may
repeat a credential: every `SiteCheck` is built through `_site_check`, which passes each
detail through the shared redactor, so `broker check` and `/v1/admin/providers` (both
printing these) show none.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from pydantic import ValidationError

from broker.config import Settings, describe_invalid
from broker.domain.clock import Clock
from broker.domain.enums import Ability
from broker.domain.errors import ConfigError
from carbon.live.errors import SourceError
from carbon.settings import CarbonSettings
from carbon.wiring import CarbonSetup, build_carbon
from connectors.base import BuildContext, CheckItem, Connector
from connectors.errors import ConnectorError
from connectors.registry import UnknownConnector, connector_class
from connectors.threads import Blocking
from redaction import redact

CHECK_TIMEOUT_S = 30.0

# What a failed item's detail says -> what to do; first match wins (docs/connectors.md).
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), hint)
    for pattern, hint in (
        (
            r"invalid .*settings|inline (secret|credential)",
            "the site's connector: settings do not validate; the message names each field",
        ),
        (
            r"environment variable \S+ is not set|secret file",
            "put the key where the carbon settings name it (the variable in the broker's "
            "environment, or the file, readable by the broker's user)",
        ),
        (
            r"TLS certificate is not trusted|certificate verify",
            "the server's certificate is not signed by the CA the credentials name: set the "
            "kubeconfig cluster's certificate-authority(-data) to the cluster's CA",
        ),
        (
            r"unauthorized|401",
            "the credentials were rejected: issue a new token or re-run the exec plugin's "
            "login (kubectl create token ...), then check again",
        ),
        (
            r"forbidden|403|permission denied|UnauthorizedOperation|AccessDenied",
            "the credentials lack a permission: grant the verbs or IAM actions listed in "
            "docs/connectors.md to the broker's identity",
        ),
        (
            r"cannot load credentials|kubeconfig|No such file",
            "the credentials file or context is wrong: fix the path (relative paths are from "
            "the config file) or the context name, or put the exec plugin on PATH",
        ),
        (
            r"ProfileNotFound|NoCredentials|could not find|default credentials",
            "no credentials found: create the profile in the shared files the broker's user "
            "reads, or set up application-default credentials",
        ),
        (
            r"InvalidClientTokenId|ExpiredToken|invalid_grant|expired",
            "the key or session is no longer valid: refresh it (aws sso login, a new key, a "
            "re-enabled service-account key) and check the machine's clock",
        ),
        (
            r"no answer|timed out|timeout|unreachable|connect",
            "the endpoint did not answer: check the URL, DNS, proxy and firewall from the "
            "broker's host",
        ),
    )
)


def hint_for(item: CheckItem) -> str:
    """A fix for a failed check item, from what its detail says; empty when none fits."""
    if item.ok:
        return ""
    for pattern, hint in _HINTS:
        if pattern.search(item.detail):
            return hint
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteCheck:
    site: str
    kind: str
    credentials: str
    lacks: tuple[Ability, ...]
    items: tuple[CheckItem, ...]
    checked_at: datetime

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(i.ok for i in self.items)


def _site_check(
    *,
    site: str,
    kind: str,
    credentials: str,
    lacks: tuple[Ability, ...],
    items: tuple[CheckItem, ...],
    checked_at: datetime,
) -> SiteCheck:
    """A `SiteCheck` whose texts went through the redactor (see the module docstring)."""
    return SiteCheck(
        site=site,
        kind=kind,
        credentials=redact(credentials),
        lacks=lacks,
        items=tuple(CheckItem(name=i.name, ok=i.ok, detail=redact(i.detail)) for i in items),
        checked_at=checked_at,
    )


async def check_connector(
    name: str, kind: str, connector: Connector, *, clock: Clock, timeout_s: float
) -> SiteCheck:
    try:
        items = await asyncio.wait_for(connector.check(), timeout=timeout_s)
    except TimeoutError:
        items = (CheckItem(name="reachable", ok=False, detail=f"no answer in {timeout_s:g}s"),)
    except ConnectorError as exc:
        items = (CheckItem(name="reachable", ok=False, detail=str(exc)),)
    return _site_check(
        site=name,
        kind=kind,
        credentials=connector.credentials(),
        lacks=tuple(a for a in Ability if not connector.supports(a)),
        items=items,
        checked_at=clock.now(),
    )


async def check_running(
    connectors: Mapping[str, Connector], *, clock: Clock, timeout_s: float = CHECK_TIMEOUT_S
) -> list[SiteCheck]:
    """Check the service's live connectors, concurrently."""
    return list(
        await asyncio.gather(
            *(
                check_connector(name, c.kind.value, c, clock=clock, timeout_s=timeout_s)
                for name, c in sorted(connectors.items())
            )
        )
    )


async def check_configured(
    settings: Settings,
    *,
    clock: Clock,
    sites: Iterable[str] = (),
    timeout_s: float = CHECK_TIMEOUT_S,
) -> list[SiteCheck]:
    """Build each configured site's connector (or those named), check it, close it; the
    connectors share one SDK pool of `settings.sdk_threads`, shut down when all are closed."""
    wanted = set(sites)
    unknown = wanted - {s.name for s in settings.sites}
    if unknown:
        raise KeyError(f"no such site in the config: {', '.join(sorted(unknown))}")

    async def one(site_name: str, context: BuildContext) -> SiteCheck:
        site = next(s for s in settings.sites if s.name == site_name)
        try:
            connector = connector_class(site.kind).from_settings(site=site, context=context)
        except ValidationError as exc:
            return failed(site.name, site.kind.value, describe_invalid(exc).strip())
        except (UnknownConnector, ConnectorError, ConfigError, OSError) as exc:
            return failed(site.name, site.kind.value, str(exc))
        try:
            return await check_connector(
                site.name, site.kind.value, connector, clock=clock, timeout_s=timeout_s
            )
        finally:
            await connector.close()

    def failed(site: str, kind: str, detail: str) -> SiteCheck:
        return _site_check(
            site=site,
            kind=kind,
            credentials="unknown",
            lacks=(),
            items=(CheckItem(name="configuration", ok=False, detail=detail),),
            checked_at=clock.now(),
        )

    names = [s.name for s in settings.sites if not wanted or s.name in wanted]
    with Blocking(settings.sdk_threads) as pool:
        context = BuildContext(
            config_dir=settings.config_dir, blocking=pool, clock=clock, sim=settings.sim
        )
        results = list(await asyncio.gather(*(one(n, context) for n in names)))
    if wanted or not settings.carbon.live_configured:
        return results
    async with aiohttp.ClientSession() as session:
        setup = build_carbon(
            settings.carbon, session=session, now=clock.now, config_dir=settings.config_dir
        )
        zones = [s.grid_zone for s in settings.sites]
        results += await check_carbon(
            setup, settings.carbon, zones=zones, clock=clock, timeout_s=timeout_s
        )
    return results


def carbon_credentials(settings: CarbonSettings, provider: str) -> str:
    """Where a carbon provider's key comes from, by reference."""
    em, wt = settings.electricitymaps, settings.watttime
    if provider == "electricitymaps" and em is not None:
        return f"env {em.api_key_env}" if em.api_key_env else f"key file {em.api_key_file}"
    if provider == "watttime" and wt is not None:
        where = f"env {wt.password_env}" if wt.password_env else f"file {wt.password_file}"
        return f"user {wt.username}, password from {where}"
    return "none"


async def check_carbon(
    setup: CarbonSetup,
    settings: CarbonSettings,
    *,
    zones: Sequence[str],
    clock: Clock,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> list[SiteCheck]:
    """Each configured live carbon provider: its key, and one reading for the sites' zones."""
    now = clock.now()

    def result(name: str, items: tuple[CheckItem, ...]) -> SiteCheck:
        return _site_check(
            site=f"carbon:{name}",
            kind="carbon",
            credentials=carbon_credentials(settings, name),
            lacks=(),
            items=items,
            checked_at=now,
        )

    out = [
        result(name, (CheckItem(name="key", ok=False, detail=why),))
        for name, why in sorted(setup.skipped.items())
    ]
    for name, source in setup.live.items():
        item = CheckItem(name="reading", ok=True, detail="covers none of the sites' zones")
        for zone in sorted(set(zones)):
            try:
                reading = await asyncio.wait_for(source.current(zone, at=now), timeout_s)
            except TimeoutError:
                item = CheckItem(name="reading", ok=False, detail=f"no answer in {timeout_s:g}s")
                break
            except SourceError as exc:
                item = CheckItem(name="reading", ok=False, detail=str(exc))
                break
            if reading is not None:
                detail = f"{zone}: {reading.gco2_per_kwh:.0f} gCO2e/kWh at {reading.at:%H:%M} UTC"
                item = CheckItem(name="reading", ok=True, detail=detail)
                break
        out.append(result(name, (item,)))
    return out
