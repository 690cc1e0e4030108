"""`POST /v1/placements:explain` states the carbon basis and, per candidate, whether its
zone's intensity is hourly or the static table's flat annual mean."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import VISION, job_body

Client = TestClient[Any, Any]


async def test_explain_states_the_basis_and_the_intensity_source(client: Client) -> None:
    body = job_body(resources={"gpus": 1, "gpu_models": ["L4"]}, priority="P2")
    resp = await client.post("/v1/placements:explain", json=body, headers=VISION)
    assert resp.status == 200
    ev = await resp.json()
    assert ev["basis"] == "lifecycle"  # carbon.basis defaults to lifecycle
    assert ev["candidates"]
    for cand in ev["candidates"]:
        # The test config has no replay or live provider: every zone is a flat annual mean.
        assert cand["intensity_source"] == "static", cand
        assert cand["hourly"] is False
    assert ev["winner"] == ev["candidates"][0]
