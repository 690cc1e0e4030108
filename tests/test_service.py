"""Service wiring: the SDK thread pool is sized by the settings, given to every connector,
and shut down by its cleanup context when the app stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.api.keys import CONNECTORS, SDK_POOL
from broker.domain.enums import SiteKind
from broker.service import create_app
from connectors.kubernetes.connector import KubernetesConnector
from connectors.settings import SiteSettings
from tests.conftest import fast_settings


async def test_the_sdk_pool_is_sized_shared_and_shut_down_with_the_app(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = fast_settings(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}", sdk_threads=3)
    # A real connector that takes the pool; its kubeconfig is missing, so it starts unreachable.
    kube = SiteSettings(
        name="kube-test",
        kind=SiteKind.KUBERNETES,
        region="oslo",
        grid_zone="NO",
        connector={"kubeconfig": str(tmp_path / "missing.kubeconfig")},
    )
    settings = settings.model_copy(update={"sites": (*settings.sites, kube)})
    app = create_app(settings)
    client = await aiohttp_client(app)

    pool = app[SDK_POOL]
    assert pool.max_workers == 3 and not pool.closed
    connector = app[CONNECTORS]["kube-test"]
    assert isinstance(connector, KubernetesConnector)
    assert connector._client._blocking is pool
    assert await pool.run(sum, [1, 2]) == 3

    await client.close()
    assert pool.closed
    with pytest.raises(RuntimeError, match="after shutdown"):
        await pool.run(sum, [1, 2])
