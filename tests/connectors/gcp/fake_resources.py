"""Resources and errors of the fake Compute Engine API, in the compute/v1 JSON shapes.

The zones offer real machine types: vCPUs and memory are Compute Engine's published figures
(https://cloud.google.com/compute/docs/gpus, .../general-purpose-machines#n1_machines).
Operation errors follow what inserts report
(https://cloud.google.com/compute/docs/troubleshooting/troubleshooting-resource-availability).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

# name -> (vCPUs, memory MB, bundled accelerator type or None, count)
MACHINES: dict[str, tuple[int, int, str | None, int]] = {
    "a2-highgpu-1g": (12, 87040, "nvidia-tesla-a100", 1),
    "a2-highgpu-2g": (24, 174080, "nvidia-tesla-a100", 2),
    "a2-ultragpu-1g": (12, 174080, "nvidia-a100-80gb", 1),
    "a3-highgpu-8g": (208, 1916928, "nvidia-h100-80gb", 8),
    "g2-standard-4": (4, 16384, "nvidia-l4", 1),
    "g2-standard-8": (8, 32768, "nvidia-l4", 1),
    "n1-standard-8": (8, 30720, None, 0),
    "n1-standard-16": (16, 61440, None, 0),
    "n1-standard-32": (32, 122880, None, 0),
    "e2-standard-4": (4, 16384, None, 0),
    "ct5lp-hightpu-1t": (24, 49152, "ct5lp", 1),  # a TPU VM: not a GPU
}

# name -> maximumCardsPerInstance
ACCELERATORS: dict[str, int] = {
    "nvidia-tesla-a100": 16,
    "nvidia-a100-80gb": 8,
    "nvidia-h100-80gb": 8,
    "nvidia-l4": 8,
    "nvidia-l4-vws": 8,  # virtual workstation: not offered by the broker
    "nvidia-tesla-t4": 4,
    "nvidia-tesla-v100": 8,
    "nvidia-tesla-p4": 4,  # no canonical model
}

ZONES: dict[str, dict[str, list[str]]] = {
    "us-central1-a": {
        "machines": [
            "e2-standard-4",
            "a2-highgpu-1g",
            "a2-highgpu-2g",
            "a2-ultragpu-1g",
            "g2-standard-4",
            "g2-standard-8",
            "n1-standard-8",
            "n1-standard-16",
        ],
        "accelerators": [
            "nvidia-tesla-a100",
            "nvidia-a100-80gb",
            "nvidia-l4",
            "nvidia-l4-vws",
            "nvidia-tesla-t4",
            "nvidia-tesla-p4",
        ],
    },
    "us-central1-b": {
        "machines": ["a2-highgpu-1g", "a3-highgpu-8g", "g2-standard-4", "n1-standard-8"],
        "accelerators": ["nvidia-tesla-a100", "nvidia-h100-80gb", "nvidia-l4", "nvidia-tesla-t4"],
    },
    "us-central1-c": {
        "machines": [
            "a2-highgpu-1g",
            "g2-standard-4",
            "n1-standard-8",
            "n1-standard-16",
            "n1-standard-32",
            "ct5lp-hightpu-1t",
        ],
        "accelerators": ["nvidia-tesla-a100", "nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-v100"],
    },
}


def machine_json(name: str, *, zone: str, base: str) -> dict[str, Any]:
    cpus, memory_mb, accel, count = MACHINES[name]
    body: dict[str, Any] = {
        "kind": "compute#machineType",
        "id": str(zlib.crc32(name.encode())),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": name,
        "description": f"{cpus} vCPUs, {memory_mb / 1024:g} GB RAM",
        "guestCpus": cpus,
        "memoryMb": memory_mb,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 128,
        "maximumPersistentDisksSizeGb": "263168",
        "zone": zone,
        "selfLink": f"{base}/zones/{zone}/machineTypes/{name}",
        "isSharedCpu": False,
        "architecture": "X86_64",
    }
    if accel is not None:
        body["accelerators"] = [{"guestAcceleratorType": accel, "guestAcceleratorCount": count}]
    return body


def accelerator_json(name: str, *, zone: str, base: str) -> dict[str, Any]:
    return {
        "kind": "compute#acceleratorType",
        "id": str(zlib.crc32(name.encode())),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": name,
        "description": name.replace("-", " ").upper(),
        "zone": f"{base}/zones/{zone}",
        "selfLink": f"{base}/zones/{zone}/acceleratorTypes/{name}",
        "maximumCardsPerInstance": ACCELERATORS[name],
    }


_FILTER_TERM = re.compile(r'^\(?\s*(labels\.[a-z0-9_-]+|name|status)\s*(=|!=)\s*"([^"]*)"\s*\)?$')


def parse_filter(expr: str) -> Callable[[dict[str, Any]], bool] | None:
    """Parse an aggregatedList filter: `(a = "x") AND (b != "y")`; None if unsupported."""
    terms = []
    for part in [p for p in re.split(r"\s+AND\s+", expr.strip()) if p] if expr else []:
        m = _FILTER_TERM.match(part.strip())
        if m is None:
            return None
        terms.append(m.groups())

    def value(inst: dict[str, Any], path: str) -> str:
        if path.startswith("labels."):
            return str(inst.get("labels", {}).get(path.removeprefix("labels."), ""))
        return str(inst.get(path, ""))

    return lambda inst: all((value(inst, path) == want) == (op == "=") for path, op, want in terms)


STATUS_TEXT = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def google_error(status: int, message: str, reason: str, domain: str = "global") -> web.Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": STATUS_TEXT.get(status, "UNKNOWN"),
        }
    }
    return web.json_response(body, status=status)


def stockout_error(code: str, *, zone: str, project: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": f"The zone 'projects/{project}/zones/{zone}' does not have enough "
        "resources available to fulfill the request.  Try a different zone, or try again later.",
        "http": 503,
    }


def quota_error(metric: str, *, region: str) -> dict[str, Any]:
    return {
        "code": "QUOTA_EXCEEDED",
        "message": f"Quota '{metric}' exceeded.  Limit: 0.0 in region {region}.",
        "errorDetails": [
            {
                "quotaInfo": {
                    "metricName": f"compute.googleapis.com/{metric.lower()}",
                    "limitName": f"{metric.replace('_', '-')}-per-project-region",
                    "dimensions": {"region": region},
                    "limit": 0,
                }
            }
        ],
        "http": 403,
    }


def unsupported_error(machine: str, *, zone: str) -> dict[str, Any]:
    return {
        "code": "UNSUPPORTED_OPERATION",
        "message": f"Machine type {machine} is not supported in zone {zone}.",
        "http": 400,
    }
