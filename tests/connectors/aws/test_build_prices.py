"""The shipped price catalog is exactly what `build_prices.py` makes from the shared data."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from carbon.power import GPU_MODELS
from connectors.aws.settings import DEFAULT_PRICE_CATALOG
from tests.conftest import REPO, SHARED_DATA

SOURCE = SHARED_DATA / "prices" / "derived" / "aws_gpu_prices_by_region.csv"


@pytest.mark.skipif(not SOURCE.exists(), reason="the shared price data is not checked out")
def test_rebuild_matches_the_shipped_catalog(tmp_path: Path) -> None:
    out = tmp_path / "prices.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "connectors.aws.data.build_prices", str(SOURCE), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == DEFAULT_PRICE_CATALOG.read_bytes()
    assert "wrote 598 rows" in proc.stderr


def test_shipped_catalog_shape() -> None:
    with DEFAULT_PRICE_CATALOG.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert 20_000 < DEFAULT_PRICE_CATALOG.stat().st_size < 100_000
    assert {r["gpu_model"] for r in rows} <= set(GPU_MODELS)
    families = {r["instance_type"].split(".")[0] for r in rows}
    assert {"p4d", "p4de", "p5", "p5en", "g5", "g6", "g6e", "p3", "p3dn"} <= families
    assert not families & {"g6f", "gr6f", "g5g", "inf2", "trn1"}
    assert len({(r["instance_type"], r["region"]) for r in rows}) == len(rows)
    assert all(int(r["gpus"]) >= 1 and float(r["on_demand_usd_h"]) > 0 for r in rows)
