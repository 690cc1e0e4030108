"""Keys by reference only, and never in logs, exception messages or reprs.

The planted-secret test runs every path that handles a key (success, refusal, outage,
fallback, token renewal, a provider echoing the key back) with logging at DEBUG for every
logger, then searches all log output, every raised exception (with its causes) and the
reprs of the objects involved for the key, the password, its basic-auth encoding and the
bearer tokens.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from carbon.live import (
    ElectricityMapsSettings,
    ElectricityMapsSource,
    FallbackSource,
    SourceAuthError,
    SourceError,
    UKCarbonIntensitySettings,
    WattTimeSettings,
    WattTimeSource,
)
from carbon.static import StaticTableSource
from tests.carbon.live import fake_watttime
from tests.carbon.live.conftest import NOW, MaxJitter, Sleeps, VirtualClock
from tests.carbon.live.fake_common import Reply
from tests.carbon.live.fake_electricitymaps import FakeElectricityMaps
from tests.carbon.live.fake_watttime import FakeWattTime

PLANTED_KEY = "PLANTED-em-key-3b9e71d0c4"
PLANTED_PASSWORD = "PLANTED-wt-pass-a5c2f8e913"
H = timedelta(hours=1)


# ---- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        (ElectricityMapsSettings, {"api_key_env": "X"}),
        (WattTimeSettings, {"username": "u", "password_env": "X"}),
        (UKCarbonIntensitySettings, {}),
    ],
)
@pytest.mark.parametrize("field", ["api_key", "token", "password", "API_KEY", "secret"])
def test_an_inline_secret_is_refused_without_echoing_it(
    model: type[Any], extra: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**extra, field: PLANTED_KEY})
    text = f"{caught.value}\n{caught.value!r}"
    assert "inline secrets" in text and field.lower() in text
    assert "*_env" in text and "*_file" in text
    assert PLANTED_KEY not in text


def test_a_secret_in_an_unknown_field_is_not_echoed_either() -> None:
    with pytest.raises(ValidationError) as caught:
        ElectricityMapsSettings.model_validate({"api_key_env": "X", "authorisation": PLANTED_KEY})
    assert "authorisation" in str(caught.value) and PLANTED_KEY not in str(caught.value)


def test_exactly_one_place_for_the_key() -> None:
    with pytest.raises(ValidationError, match="exactly one of api_key_env, api_key_file"):
        ElectricityMapsSettings()
    with pytest.raises(ValidationError, match="exactly one of api_key_env, api_key_file"):
        ElectricityMapsSettings(api_key_env="A", api_key_file=Path("k"))
    with pytest.raises(ValidationError, match="exactly one of password_env, password_file"):
        WattTimeSettings(username="u")


def test_keys_are_read_from_the_named_variable_or_file(tmp_path: Path) -> None:
    settings = ElectricityMapsSettings(api_key_env="EM_TOKEN")
    key = settings.api_key({"EM_TOKEN": f"  {PLANTED_KEY}\n"})
    assert key.get_secret_value() == PLANTED_KEY
    assert PLANTED_KEY not in f"{key} {key!r} {settings!r}"
    path = tmp_path / "password"
    path.write_text(PLANTED_PASSWORD + "\n", encoding="utf-8")
    wt = WattTimeSettings(username="u", password_file=path)
    assert wt.password({}).get_secret_value() == PLANTED_PASSWORD


def test_a_missing_secret_names_the_place_not_a_value(tmp_path: Path) -> None:
    with pytest.raises(SourceAuthError, match="environment variable EM_TOKEN is not set"):
        ElectricityMapsSettings(api_key_env="EM_TOKEN").api_key({})
    with pytest.raises(SourceAuthError, match="cannot read secret file"):
        ElectricityMapsSettings(api_key_file=tmp_path / "absent").api_key({})
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(SourceAuthError, match="is empty"):
        ElectricityMapsSettings(api_key_file=tmp_path / "empty").api_key({})


# ---- the planted secret ------------------------------------------------------------------


async def _build(kind: Any, settings: Any, session: aiohttp.ClientSession) -> None:
    kind(settings, session=session)


def _chain_of(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


async def test_a_planted_secret_never_leaks(
    aiohttp_server: Any,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PLANTED_EM", PLANTED_KEY)
    monkeypatch.setenv("PLANTED_WT", PLANTED_PASSWORD)
    monkeypatch.setattr(fake_watttime, "PASSWORD", PLANTED_PASSWORD)
    em_fake = FakeElectricityMaps(clock, token=PLANTED_KEY)
    wt_fake = FakeWattTime(clock)
    em_server: TestServer = await aiohttp_server(em_fake.app())
    wt_server: TestServer = await aiohttp_server(wt_fake.app())
    raised: list[BaseException] = []

    async def attempt(call: Callable[[], Any]) -> None:
        try:
            await call()
        except (SourceError, ValueError) as exc:
            raised.extend(_chain_of(exc))

    em_settings = ElectricityMapsSettings(
        base_url=str(em_server.make_url("/v3")), api_key_env="PLANTED_EM", max_attempts=2
    )
    em = ElectricityMapsSource(
        em_settings, session=session, clock=clock, sleep=sleeps, rng=MaxJitter()
    )
    chain = FallbackSource({"DE": [em, em.cached(), StaticTableSource.default()]})
    # Success, then an outage through the chain (warning logged), then a refused key, then a
    # provider that echoes the key back in its error body.
    assert await chain.current("DE", at=NOW) is not None
    await chain.forecast("DE", start=NOW, end=NOW + 3 * H)
    em_fake.down = Reply(503, text="down")
    clock.advance(400)
    await chain.forecast("DE", start=NOW, end=NOW + 3 * H)
    await attempt(lambda: em.forecast("DE", start=NOW + 2 * H, end=NOW + 3 * H))
    em_fake.down = None
    em_fake.token = "rotated"
    await attempt(lambda: em.current("FR", at=NOW))
    em_fake.token = PLANTED_KEY
    em_fake.script("/v3/", Reply(422, {"error": "bad", "message": f"token {PLANTED_KEY} ??"}))
    await attempt(lambda: em.current("FR", at=NOW + 2 * H))

    wt_settings = WattTimeSettings(
        base_url=str(wt_server.make_url("/")).rstrip("/"),
        username=fake_watttime.USERNAME,
        password_env="PLANTED_WT",
        regions={"US-CAL-CISO": "CAISO_NORTH", "US-MIDA-PJM": "PJM_ROANOKE"},
        cache_ttl_s=0,
    )
    wt = WattTimeSource(wt_settings, session=session, clock=clock, sleep=sleeps)
    await wt.forecast("US-CAL-CISO", start=NOW, end=NOW + 2 * H)
    wt_fake.expire_tokens()
    await wt.signal_index("US-CAL-CISO")
    await attempt(lambda: wt.forecast("US-MIDA-PJM", start=NOW + H, end=NOW + 2 * H))
    tokens = sorted(wt_fake.tokens)
    assert wt_fake.logins == 2 and tokens
    wt_fake.script("/v3/", Reply(400, {"error": f"bad token {tokens[-1]}"}))
    await attempt(lambda: wt.signal_index("US-CAL-CISO"))
    monkeypatch.setenv("PLANTED_WT", PLANTED_PASSWORD + "-wrong")
    await attempt(
        lambda: WattTimeSource(wt_settings, session=session, clock=clock).current(
            "US-CAL-CISO", at=NOW
        )
    )
    # Variables gone: the sources cannot even be built, and say which variable is missing.
    monkeypatch.delenv("PLANTED_EM")
    monkeypatch.delenv("PLANTED_WT")
    await attempt(lambda: _build(ElectricityMapsSource, em_settings, session))
    await attempt(lambda: _build(WattTimeSource, wt_settings, session))

    basic = base64.b64encode(f"{fake_watttime.USERNAME}:{PLANTED_PASSWORD}".encode()).decode()
    planted = [PLANTED_KEY, PLANTED_PASSWORD, basic, *tokens, "wt-token-1-7c1d"]
    assert len(raised) >= 6, [type(e).__name__ for e in raised]
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    texts = [caplog.text]
    texts += [f"{r.getMessage()} {r.args!r}" for r in caplog.records]
    texts += [f"{exc} {exc!r}" for exc in raised]
    texts += [repr(obj) for obj in (em, wt, chain, em.cached(), em_settings, wt_settings)]
    texts += [str(obj) for obj in (em_settings, wt_settings)]
    for text in texts:
        for secret in planted:
            assert secret not in text, f"{secret!r} leaked into: {text[:300]}"
    # The echoed key was scrubbed, not dropped: the provider's message is still there.
    assert any("token *** ??" in str(exc) for exc in raised)
