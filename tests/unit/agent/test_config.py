import subprocess
import sys
from pathlib import Path

import pytest

from qxedge.agent.cli import main
from qxedge.agent.config import load_config
from qxedge.core.errors import ConfigError
from qxedge.testing import EDGE_YAML

BAD = """
site: "bad site"
broker: {url: "http://x", ulr: 1}
connectors:
  - mqtt: {topic_pattern: "plant/{asset}", qos: 3}
window: {length_s: -1}
models:
  - name: anomaly
    path: missing.onnx
    inputs: [temp.mean, temp.bogus]
rules:
  - {name: r, model: anomaly, above: 1, clear_below: 2, derate_to: 0.5}
"""


def problems_of(path: Path, **kwargs: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, **kwargs)  # type: ignore[arg-type]
    return {p.path: p.message for p in info.value.problems}


def test_example_config_is_valid() -> None:
    cfg = load_config(EDGE_YAML, environ={})
    assert cfg.site == "demo"
    assert cfg.connectors[0].mqtt is not None and cfg.connectors[0].mqtt.topics == ["plant/#"]
    assert cfg.connectors[0].mqtt.topic_pattern == "plant/{line}/{asset}/{signal}"
    assert cfg.models[0].path.is_file() and cfg.models[0].providers[-1] == "CPUExecutionProvider"


def test_a_site_id_cannot_end_like_another_sites_session_client_id() -> None:
    """``qxedge-uplink-osan-0123abcd`` is site osan's client id with a session suffix: a site named
    ``osan-0123abcd`` could be kicked off by osan (the brokers bind client ids to usernames by pattern)."""
    with pytest.raises(ConfigError) as info:
        load_config(EDGE_YAML, environ={"QXEDGE_SITE": "osan-0123abcd"})
    assert [p.path for p in info.value.problems] == ["site"] and "8 hex digits" in str(info.value)
    assert load_config(EDGE_YAML, environ={"QXEDGE_SITE": "osan-line-3"}).site == "osan-line-3"


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    problems = problems_of(tmp_path / "bad.yaml")
    assert "site" in problems
    assert "expected mqtt://" in problems["broker.url"]
    assert problems["broker.ulr"] == "unknown key"
    assert "{signal}" in problems["connectors[0].mqtt.topic_pattern"]
    assert "connectors[0].mqtt.qos" in problems
    assert "greater than 0" in problems["window.length_s"]
    assert problems["models[0].path"].startswith("file not found")
    assert "temp.bogus" in problems["models[0].inputs"]
    assert "clear_below" in problems["rules[0]"]


def test_cross_references_are_checked(tmp_path: Path) -> None:
    text = (
        EDGE_YAML.read_text()
        .replace("model: anomaly", "model: nope")
        .replace("stats: [mean, std", "stats: [mean")
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "anomaly.onnx").write_bytes(
        (EDGE_YAML.parent / "models" / "anomaly.onnx").read_bytes()
    )
    (tmp_path / "edge.yaml").write_text(text)
    problems = problems_of(tmp_path / "edge.yaml")
    assert problems["rules[0].model"] == "no model named 'nope'"
    assert "['std']" in problems["models[0].inputs"]


def test_yaml_syntax_and_top_level_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("site: demo\n  broker: [\n")
    assert "invalid YAML: line" in problems_of(tmp_path / "a.yaml")[""]
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    assert "must be a mapping" in problems_of(tmp_path / "b.yaml")[""]
    assert "cannot read" in problems_of(tmp_path / "missing.yaml")[""]


def test_environment_and_broker_flag_override_the_file() -> None:
    env = {
        "QXEDGE_SITE": "gumi-line-3",
        "QXEDGE_WINDOW__LENGTH_S": "20",
        "QXEDGE_MODELS__0__PROVIDERS": "[cpu]",
        "OTHER": "x",
    }
    cfg = load_config(EDGE_YAML, environ=env, broker_url="mqtt://10.1.2.3:1884")
    assert cfg.site == "gumi-line-3" and cfg.window.length_s == 20.0
    assert cfg.models[0].providers == ["CPUExecutionProvider"]
    assert (cfg.broker.host, cfg.broker.port) == ("10.1.2.3", 1884)
    with pytest.raises(ConfigError) as info:
        load_config(EDGE_YAML, environ={"QXEDGE_WINDOW__EVERY_S": "often"})
    assert "(set by QXEDGE_WINDOW__EVERY_S)" in str(info.value.problems[0])
    assert info.value.problems[0].path == "window.every_s"


def test_check_config_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EDGE_YAML)]) == 0
    assert "ok" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text(BAD)
    assert main(["check-config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "models[0].path: file not found" in err and "broker.ulr: unknown key" in err
    assert "Traceback" not in err


def test_the_plant_example_is_accepted_and_plans_on_the_wall_clock(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """configs/plant.yaml: no simulator, one-hour slots on Asia/Seoul's wall clock, holidays, dry run."""
    plant = EDGE_YAML.parent / "plant.yaml"
    assert main(["check-config", str(plant)]) == 0
    out = capsys.readouterr().out
    assert "ok (site gumi-line-3" in out
    assert "planning: optimised, 60-minute slots on the Asia/Seoul wall clock" in out and "dry run" in out
    cfg = load_config(plant, environ={})
    assert cfg.simulator is None and cfg.safety.dry_run and cfg.planning is not None
    assert cfg.planning.demo_clock is None and cfg.planning.tariff.holidays


def test_the_demo_clock_needs_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The compressed day cannot reach a plant: without a simulator: section it is refused."""
    assert main(["check-config", str(EDGE_YAML)]) == 0
    assert "planning.demo_clock: qxedge demo only (a slot every 2.5 s)" in capsys.readouterr().out
    text = EDGE_YAML.read_text()
    (tmp_path / "edge.yaml").write_text(text[: text.index("simulator:")])
    (tmp_path / "models").symlink_to(EDGE_YAML.parent / "models")
    problems = problems_of(tmp_path / "edge.yaml")
    assert "needs a `simulator:` section" in problems["planning.demo_clock"]


MODEL = EDGE_YAML.parent / "models" / "anomaly.onnx"


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qxedge.agent.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_loads_the_model_and_reports_a_mismatch_with_the_other_problems(
    tmp_path: Path,
) -> None:
    text = EDGE_YAML.read_text().replace("vibration.std, vibration.max]", "vibration.std]")
    text = text.replace("path: models/anomaly.onnx", f"path: {MODEL}")
    text = text.replace("keepalive_s: 15", "keepalive_s: -1")  # a problem elsewhere, found in the same pass
    (tmp_path / "edge.yaml").write_text(text)
    run = check_config(tmp_path / "edge.yaml")
    assert run.returncode == 2
    assert f"models[0]: model 'anomaly' ({MODEL}) expects 8 features per row, config lists 7" in run.stderr
    assert "broker.keepalive_s:" in run.stderr
    assert "Traceback" not in run.stderr


def test_check_config_without_site_reports_that_alone(tmp_path: Path) -> None:
    text = (
        EDGE_YAML.read_text()
        .replace("site: demo\n", "")
        .replace("path: models/anomaly.onnx", f"path: {MODEL}")
    )
    (tmp_path / "edge.yaml").write_text(text)
    run = check_config(tmp_path / "edge.yaml")
    assert run.returncode == 2
    assert run.stderr.splitlines()[1:] == ["  site: field required"]


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_check_config_refuses_an_empty_file(text: str, tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text(text)
    run = check_config(tmp_path / "edge.yaml")
    assert run.returncode == 2
    assert run.stderr.splitlines()[1:] == ["  the config file is empty"]


@pytest.mark.parametrize(
    "argv", [["demo", "--duration", "-1"], ["run", "--config", "x", "--broker", "http://h"]]
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_environment_values_keep_their_string_type() -> None:
    cfg = load_config(EDGE_YAML, environ={"QXEDGE_BROKER__PASSWORD": "123456", "QXEDGE_SITE": "0123"})
    assert cfg.broker.password is not None and cfg.broker.password.get_secret_value() == "123456"
    assert cfg.site == "0123"


def test_overlapping_or_self_subscribing_topic_filters_are_refused(tmp_path: Path) -> None:
    text = EDGE_YAML.read_text().replace(
        'topics: ["plant/#"]', 'topics: ["plant/#", "plant/line1/+/temp", "#"]'
    )
    text = text.replace("path: models/anomaly.onnx", f"path: {EDGE_YAML.parent / 'models' / 'anomaly.onnx'}")
    (tmp_path / "edge.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "edge.yaml", environ={})
    messages = [str(p) for p in info.value.problems]
    assert any("'plant/line1/+/temp' overlaps 'plant/#'" in m for m in messages)
    assert any("'#' would receive the agent's own qx/v1 messages" in m for m in messages)


def test_check_config_refuses_a_qaoa_device_that_is_not_installed(tmp_path: Path) -> None:
    text = (EDGE_YAML.parent / "datacenter.yaml").read_text()
    (tmp_path / "dc.yaml").write_text(text.replace("device: lightning.qubit", "device: lightning.qbit"))
    run = check_config(tmp_path / "dc.yaml")
    assert run.returncode == 2
    problem = "solvers.qaoa.device: unknown device 'lightning.qbit' (did you mean lightning.qubit?)"
    assert problem in run.stderr and "qxedge.gpu" in run.stderr
