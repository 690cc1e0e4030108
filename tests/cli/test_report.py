"""`broker report` against a running broker: a table, JSON, and CSV/HTML files."""

from __future__ import annotations

import json


def test_a_finished_job_shows_in_the_report_and_html_goes_to_a_file(
    cli, broker, make_job, tmp_path
) -> None:
    job = broker.submit(make_job("report-me", estimated_duration_s=600))
    watch = cli("jobs", "watch", job["id"], "--interval", "0.2", "--timeout", "20")
    assert watch.code == 0, watch.err

    result = cli("report", "--json", user="admin")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["total"]["runs"] >= 1
    assert report["total"]["energy_kwh"] > 0 and report["total"]["kgco2e"] > 0
    assert "vision-team" in {g["key"] for g in report["groups"]}

    table = cli("report", "--group-by", "site")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[1].split()[:2] == ["SITE", "RUNS"]
    assert any(line.startswith("total") for line in lines)

    page = tmp_path / "report.html"
    wrote = cli("report", "--format", "html", "-o", str(page))
    assert wrote.code == 0, wrote.err
    assert page.read_text(encoding="utf-8").count("<svg") == 3


def test_bad_report_input_is_named(cli) -> None:
    result = cli("report", "--from", "last week")
    assert result.code == 1
    assert "from" in result.err
