"""Bad input gets a clear problem document with a machine-readable reason, and loses nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, NLP, VISION, job_body

Client = TestClient[Any, Any]


async def problem(resp: Any, status: int, slug: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = json.loads(text)
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in text
    return body


async def assert_no_jobs(client: Client) -> None:
    page = await (await client.get("/v1/jobs", headers=ADMIN)).json()
    assert page["items"] == []


async def test_malformed_json_is_400(client: Client) -> None:
    resp = await client.post(
        "/v1/jobs", data=b'{"name": "x",', headers={**VISION, "Content-Type": "application/json"}
    )
    await problem(resp, 400, "malformed-json")
    await assert_no_jobs(client)


async def test_wrong_content_type_is_415(client: Client) -> None:
    resp = await client.post(
        "/v1/jobs", data=json.dumps(job_body()), headers={**VISION, "Content-Type": "text/plain"}
    )
    await problem(resp, 415, "unsupported-media-type")
    await assert_no_jobs(client)


async def test_body_over_one_mebibyte_is_413(client: Client) -> None:
    body = job_body(workload={"image": "x", "env": {"PAD": "a" * (1024 * 1024)}})
    resp = await client.post(
        "/v1/jobs", data=json.dumps(body), headers={**VISION, "Content-Type": "application/json"}
    )
    await problem(resp, 413, "payload-too-large")
    await assert_no_jobs(client)


def _resources(**kw: Any) -> dict[str, Any]:
    return {"gpus": 1, "gpu_models": ["L4"], **kw}


SOON = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("zero gpus", job_body(resources=_resources(gpus=0)), "resources.gpus", "greater_than_equal"),
    (
        "negative duration",
        job_body(estimated_duration_s=-5),
        "estimated_duration_s",
        "greater_than",
    ),
    ("string for int", job_body(resources=_resources(gpus="2")), "resources.gpus", "int_type"),
    ("unknown field", job_body(colour="blue"), "colour", "extra_forbidden"),
    ("tenant in body", job_body(tenant="nlp-team"), "tenant", "extra_forbidden"),
    ("bad tier", job_body(priority="P0"), "priority", "literal_error"),
    (
        "missing workload",
        {k: v for k, v in job_body().items() if k != "workload"},
        "workload",
        "missing",
    ),
    ("naive deadline", job_body(deadline="2030-01-01T00:00:00"), "deadline", "timezone_aware"),
    ("deadline in the past", job_body(deadline=PAST), "deadline", "deadline_past"),
    (
        "deadline too close",
        job_body(deadline=SOON, estimated_duration_s=3600),
        "deadline",
        "deadline_unreachable",
    ),
    (
        "unknown GPU model",
        job_body(resources=_resources(gpu_models=["RTX-9090"])),
        "resources.gpu_models.0",
        "unknown_gpu_model",
    ),
    (
        "fraction and MIG",
        job_body(resources=_resources(gpu_fraction=0.5, mig_profile="1g.10gb")),
        "resources",
        "value_error",
    ),
    ("latency without origin", job_body(latency_slo_ms=50), "(body)", "value_error"),
    (
        "preemptible P1",
        job_body(priority="P1", kind="inference", preemptible=True),
        "(body)",
        "value_error",
    ),
    ("body is a list", [job_body()], "(body)", "model_type"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("case", "body", "field", "err_type"), INVALID, ids=[c[0] for c in INVALID]
)
async def test_invalid_submissions_are_422_naming_the_field(
    client: Client, case: str, body: Any, field: str, err_type: str
) -> None:
    resp = await client.post("/v1/jobs", json=body, headers=VISION)
    doc = await problem(resp, 422, "validation-error")
    assert any(e["field"] == field and e["type"] == err_type for e in doc["errors"]), doc
    await assert_no_jobs(client)


async def test_unsatisfiable_job_is_422_with_each_sites_reason(client: Client) -> None:
    body = job_body(resources={"gpus": 16, "gpu_models": ["H100"]})  # no node has 16
    doc = await problem(
        await client.post("/v1/jobs", json=body, headers=VISION), 422, "validation-error"
    )
    assert doc["detail"] == "no site in the fleet can ever run this job"
    h100 = [e for e in doc["errors"] if "/H100-" in e["message"]]
    assert h100 and all(e["type"] == "unschedulable.gpus_per_node" for e in h100)
    await assert_no_jobs(client)


@pytest.mark.parametrize(
    "query", ["state=bogus", "limit=0", "limit=abc", "limit=501", "cursor=%%%", "colour=blue"]
)
async def test_bad_list_queries_are_422(client: Client, query: str) -> None:
    await problem(await client.get(f"/v1/jobs?{query}", headers=VISION), 422, "validation-error")


async def test_missing_and_bad_tokens_are_401(client: Client) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ):
        resp = await client.get("/v1/jobs", headers=headers)
        await problem(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.post("/v1/jobs", json=job_body())
    await problem(resp, 401, "unauthorized")
    await assert_no_jobs(client)


async def test_users_cannot_read_inventory(client: Client) -> None:
    await problem(await client.get("/v1/inventory", headers=NLP), 403, "forbidden")
    assert (await client.get("/v1/inventory", headers=ADMIN)).status == 200


async def test_unknown_routes_and_methods_are_problems(client: Client) -> None:
    await problem(await client.get("/v1/nothing-here", headers=VISION), 404, "not-found")
    await problem(await client.get("/v1/jobs/job-doesnotexist", headers=VISION), 404, "not-found")
    resp = await client.put("/v1/jobs", json={}, headers=VISION)
    await problem(resp, 405, "method-not-allowed")
    assert "POST" in resp.headers["Allow"]


async def test_bad_idempotency_key_is_422(client: Client) -> None:
    resp = await client.post(
        "/v1/jobs", json=job_body(), headers={**VISION, "Idempotency-Key": "x" * 300}
    )
    await problem(resp, 422, "validation-error")
    await assert_no_jobs(client)


async def test_explain_validates_like_submit(client: Client) -> None:
    resp = await client.post(
        "/v1/placements:explain", json=job_body(estimated_duration_s=0), headers=VISION
    )
    await problem(resp, 422, "validation-error")


async def test_admin_routes_need_the_admin_role_and_show_no_hashes(client: Client) -> None:
    await problem(await client.get("/v1/admin/tokens", headers=VISION), 403, "forbidden")
    resp = await client.get("/v1/admin/tokens", headers=ADMIN)
    assert resp.status == 200
    text = await resp.text()
    assert "sha256$" not in text and "demo-admin-token" not in text
    items = (await resp.json())["items"]
    assert {(t["name"], t["tenant"], t["role"]) for t in items} == {
        ("demo-admin", "platform", "admin"),
        ("demo-vision", "vision-team", "user"),
        ("demo-nlp", "nlp-team", "user"),
    }


async def test_provider_checks_need_the_admin_role_and_report_each_site(client: Client) -> None:
    await problem(await client.get("/v1/admin/providers", headers=VISION), 403, "forbidden")
    resp = await client.get("/v1/admin/providers", headers=ADMIN)
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert [i["site"] for i in items] == sorted(i["site"] for i in items)
    assert len(items) == 5
    for item in items:
        assert item["kind"] == "sim" and item["credentials"] == "none" and item["ok"]
        assert item["checks"][0]["name"] == "inventory"
