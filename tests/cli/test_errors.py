"""What the CLI says when something is wrong: the API's problems, the network, the input."""

from __future__ import annotations

import json

import yaml


def test_a_422_prints_the_field_error_and_exits_1(cli, make_job) -> None:
    body = make_job("no-gpus", resources={"gpus": 0})

    result = cli("submit", "-", stdin=yaml.safe_dump(body))

    assert result.code == 1
    assert result.out == ""
    assert result.err.splitlines() == [
        "broker: The request is not valid: resources.gpus: Input should be greater than or "
        "equal to 1",
        "  resources.gpus: Input should be greater than or equal to 1",
    ]


def test_a_problem_with_json_is_printed_on_stdout_too(cli, make_job) -> None:
    body = make_job("bad-model", resources={"gpus": 1, "gpu_models": ["Z9000"]})

    result = cli("explain", "-", "--json", stdin=json.dumps(body))

    assert result.code == 1
    problem = json.loads(result.out)
    assert problem["status"] == 422
    assert problem["errors"][0]["field"] == "resources.gpu_models.0"
    assert "  resources.gpu_models.0: unknown GPU model 'Z9000'" in result.err


def test_a_wrong_token_exits_1_and_is_never_echoed(cli) -> None:
    secret = "wrong-secret-token-0123456789"

    from_env = cli("sites", token=secret)
    from_flag = cli("jobs", "list", "--token", secret, "--json", user=None)

    for result in (from_env, from_flag):
        assert result.code == 1
        assert "broker: Authentication required: the token is not valid" in result.err
        assert secret not in result.out + result.err
    assert json.loads(from_flag.out)["status"] == 401


def test_a_missing_token_says_how_to_give_one(cli) -> None:
    result = cli("sites", user=None)

    assert result.code == 1
    assert result.err.splitlines() == [
        "broker: Authentication required: send Authorization: Bearer <token>",
        "  (no token given: set BROKER_TOKEN or pass --token)",
    ]


def test_an_unknown_job_is_a_404(cli) -> None:
    result = cli("jobs", "show", "job-doesnotexist")

    assert result.code == 1
    assert result.err == "broker: Not found: no job job-doesnotexist\n"


def test_a_bad_filter_is_named(cli) -> None:
    result = cli("jobs", "list", "--priority", "P9")

    assert result.code == 1
    assert "  priority: must be among: P1, P2, P3" in result.err.splitlines()


def test_connection_refused_names_the_url(cli, closed_url) -> None:
    result = cli("sites", url=closed_url, user="admin")

    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        f"broker: cannot connect to the broker at {closed_url}: Connection refused\n"
    )


def test_a_url_with_a_trailing_slash_works(cli, broker) -> None:
    result = cli("sites", "--url", broker.url + "/", "--json")

    assert result.code == 0, result.err
    assert len(json.loads(result.out)["items"]) == 5


def test_a_malformed_url_exits_2(cli) -> None:
    result = cli("sites", url="ftp://example.com")

    assert result.code == 2
    assert result.err == "broker: --url must look like http://host:port, not 'ftp://example.com'\n"


def test_a_missing_file_exits_2(cli, tmp_path) -> None:
    missing = tmp_path / "nope.yaml"

    result = cli("submit", str(missing))

    assert result.code == 2
    assert result.err == f"broker: cannot read {missing}: No such file or directory\n"


def test_invalid_yaml_exits_2_with_one_line(cli) -> None:
    result = cli("explain", "-", stdin="name: [unclosed\npriority: P1\n")

    assert result.code == 2
    assert result.err.startswith("broker: stdin is not valid YAML or JSON: ")
    assert "(line 2, column 9)" in result.err
    assert result.err.count("\n") == 1


def test_yaml_that_is_not_a_job_exits_2(cli) -> None:
    result = cli("submit", "-", stdin="- just\n- a list\n")

    assert result.code == 2
    assert result.err == (
        "broker: stdin must hold one job: a mapping with name, priority, kind, ...\n"
    )
