"""Live grid-intensity sources over HTTP, and the fallback chain that keeps them safe to use.

One class per provider, each a `carbon.base.CarbonSource`:

* `ElectricityMapsSource` - Electricity Maps API v3, average (flow-traced) intensity;
* `WattTimeSource` - WattTime API v3, the MARGINAL signal (MOER), source ``watttime:moer``;
* `UKCarbonIntensitySource` - the GB Carbon Intensity API, national ``GB`` and ``GB-<id>``;
* `FallbackSource` - per zone an ordered chain, e.g. live -> ``live.cached()`` -> static.

They share `http.HttpClient` (timeouts, retries with full-jitter backoff honouring
Retry-After, a token-bucket rate limit) and `base.LiveSource` (a TTL cache per zone and
endpoint, past/future split). The caller passes ONE `aiohttp.ClientSession` and owns it; clock
and sleep are injectable so tests run on virtual time. Keys are given by reference only
(`settings.py`) and never appear in logs, messages or reprs. Errors: `errors.py`.
"""

from carbon.live.base import CachedView, LiveSource
from carbon.live.electricitymaps import ElectricityMapsSource
from carbon.live.errors import (
    BadResponse,
    SourceAuthError,
    SourceError,
    SourceUnavailable,
    ZoneUnknown,
)
from carbon.live.fallback import FallbackSource
from carbon.live.settings import (
    ElectricityMapsSettings,
    LiveSourceSettings,
    UKCarbonIntensitySettings,
    WattTimeSettings,
)
from carbon.live.uk import UKCarbonIntensitySource
from carbon.live.watttime import SignalIndex, WattTimeSource

__all__ = [
    "BadResponse",
    "CachedView",
    "ElectricityMapsSettings",
    "ElectricityMapsSource",
    "FallbackSource",
    "LiveSource",
    "LiveSourceSettings",
    "SignalIndex",
    "SourceAuthError",
    "SourceError",
    "SourceUnavailable",
    "UKCarbonIntensitySettings",
    "UKCarbonIntensitySource",
    "WattTimeSettings",
    "WattTimeSource",
    "ZoneUnknown",
]
