"""`scheduler.quotas`: the config's shapes and what is refused at load, with clear errors
(also through `broker check`, which prints `broker: <reason>` and exits non-zero)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.cli.main import main
from broker.config import load_settings
from broker.domain.enums import Tier
from broker.domain.errors import ConfigError
from broker.domain.policy.quotas import TierQuota
from broker.scheduling.settings import engine_settings

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"  # 144 GPUs, 3 tenants


def load(quotas: Any) -> Any:
    return load_settings(DEMO, env={}, overrides={"scheduler.quotas": quotas})


def test_a_number_is_the_nominal_and_a_mapping_adds_a_borrowing_limit() -> None:
    s = load({"vision-team": {"P1": 8, "P2": {"nominal": 16, "borrowing_limit": 8}}})
    assert engine_settings(s.scheduler).quotas == {
        "vision-team": {
            Tier.P1: TierQuota(nominal=8, borrowing_limit=None),
            Tier.P2: TierQuota(nominal=16, borrowing_limit=8),
        }
    }


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        (
            {"ghost-team": {"P1": 4}},
            "scheduler.quotas.ghost-team: no token has tenant 'ghost-team' "
            "(known: nlp-team, platform, vision-team)",
        ),
        ({"vision-team": {"P4": 4}}, "scheduler.quotas.vision-team.P4.[key]: Input should be"),
        (
            {"vision-team": {"P1": -1}},
            "scheduler.quotas.vision-team.P1.nominal: Input should be greater than or equal to 0",
        ),
        (
            {"vision-team": {"P1": {"nominal": 1, "borrowing_limit": -2}}},
            "scheduler.quotas.vision-team.P1.borrowing_limit: Input should be greater",
        ),
        (
            {"vision-team": {"P1": {"nominal": 1, "cap": 2}}},
            "scheduler.quotas.vision-team.P1.cap: Extra inputs are not permitted",
        ),
        (
            {"vision-team": {"P2": {"nominal": 100, "borrowing_limit": 100}}},
            "scheduler.quotas.vision-team.P2: its cap (nominal + borrowing_limit) of 200 GPUs "
            "is above the 144 GPUs of the configured sites",
        ),
        (
            {"vision-team": {"P1": 145}},
            "scheduler.quotas.vision-team.P1: its nominal of 145 GPUs is above the 144 GPUs",
        ),
        (
            {"vision-team": {"P1": 100}, "nlp-team": {"P2": 50}},
            "scheduler.quotas: the nominal quotas add up to 150 GPUs, more than the 144 GPUs",
        ),
    ],
)
def test_bad_quotas_are_refused_at_load_naming_the_setting(quotas: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(quotas)
    assert message in str(caught.value)
    assert "Value error" not in str(caught.value)


def test_broker_check_prints_the_reason_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    config["scheduler"]["quotas"] = {"ghost-team": {"P1": 4}}
    config["latency"] = {"file": str(DEMO.parent / "latency.csv")}
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    assert main(["check", "--config", str(path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("broker: config ")
    assert "scheduler.quotas.ghost-team: no token has tenant 'ghost-team'" in err
    assert "Traceback" not in err
