"""A reference deployment's configuration, unchanged: its compose environments start the services, every
variable it sets is honoured, mapped or named in one warning, and its model sources and keys are read."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from rtvi.core.bus.kafka import KafkaSink
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.models.source import hf_token_of, ngc_cli_spec, resolve_model_path
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import ModelLoadError
from rtvi.reference_env import NO_EFFECT, set_without_effect, warn_without_effect
from rtvi.services.embed.spec import CORE as EMBED_CORE
from rtvi.services.vlm.models.registry import load_vlm
from rtvi.services.vlm.spec import CORE as VLM_CORE
from rtvi.settings import Settings
from tests.model_factory import build_tiny_cosmos_like, build_tiny_llava
from tests.reference_compose import EMBED_COMPOSE_ENV, VLM_COMPOSE_ENV, compose_environment
from tests.servers import free_port

# Read by the libraries we use or by the container runtime, not by Settings (docs/compatibility.md).
LIBRARY_VARIABLES = frozenset(
    {
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "NVIDIA_VISIBLE_DEVICES",
        "TORCH_CUDNN_V8_API_DISABLED",
    }
)


def _aliases(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    return [str(choice) for choice in getattr(alias, "choices", [])]


SETTINGS_VARIABLES = {name for f in Settings.model_fields.values() for name in _aliases(f)}


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in SETTINGS_VARIABLES | set(NO_EFFECT):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize("compose", [EMBED_COMPOSE_ENV, VLM_COMPOSE_ENV], ids=["embed", "vlm"])
def test_reference_compose_environment_loads(monkeypatch: pytest.MonkeyPatch, compose: str) -> None:
    """With an empty .env the compose passes "" for ~30 variables; each must mean its default."""
    env = compose_environment(compose, {})
    assert sum(1 for v in env.values() if v == "") >= 8  # the test would not test much otherwise
    settings = _settings(monkeypatch, env)
    assert settings.batch_size == 0 and settings.vlm_concurrency == 0  # VLM_BATCH_SIZE / NUM_VLM_PROCS ""
    assert settings.rtsp_timeout_ms == 2000


@pytest.mark.parametrize("name", sorted(SETTINGS_VARIABLES))
def test_every_setting_takes_empty_as_its_default(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    defaults = _settings(monkeypatch, {})
    assert _settings(monkeypatch, {name: ""}) == defaults


@pytest.mark.parametrize("compose", [EMBED_COMPOSE_ENV, VLM_COMPOSE_ENV], ids=["embed", "vlm"])
def test_every_reference_variable_is_read_mapped_or_warned(compose: str) -> None:
    unknown = set(compose_environment(compose, {})) - SETTINGS_VARIABLES - set(NO_EFFECT) - LIBRARY_VARIABLES
    assert not unknown, f"reference variables rtvi neither reads nor warns about: {sorted(unknown)}"


def test_reference_defaults_raise_no_warning_and_real_choices_raise_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for compose in (EMBED_COMPOSE_ENV, VLM_COMPOSE_ENV):
        assert set_without_effect(compose_environment(compose, {})) == []
    env = compose_environment(VLM_COMPOSE_ENV, {"NUM_GPUS": "2", "VLM_VIDEO_PRUNING_RATE": "0.5"})
    with caplog.at_level(logging.WARNING, logger="rtvi.reference_env"):
        named = warn_without_effect(env)
    assert named == ["NUM_GPUS", "VLM_VIDEO_PRUNING_RATE"]
    assert len(caplog.records) == 1
    assert "NUM_GPUS: one process uses one device" in caplog.records[0].getMessage()
    assert "VLM_VIDEO_PRUNING_RATE: Efficient Video Sampling" in caplog.records[0].getMessage()


def test_endpoint_key_comes_from_the_reference_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    placeholder = _settings(monkeypatch, {"OPENAI_API_KEY": "NOAPIKEYSET", "NVIDIA_API_KEY": "nvapi-n"})
    assert placeholder.endpoint_api_key == "nvapi-n"  # the compose's placeholder is no key
    assert (
        _settings(monkeypatch, {"OPENAI_API_KEY": "sk-o", "NVIDIA_API_KEY": "x"}).endpoint_api_key == "sk-o"
    )
    both = _settings(monkeypatch, {"VIA_VLM_API_KEY": "via", "OPENAI_API_KEY": "sk-o"})
    assert both.endpoint_api_key == "via"
    assert "sk-o" not in repr(both) and "via" not in repr(both)


def test_trust_remote_code_follows_the_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """VLM checkpoints' own code runs only with VLM_TRUST_REMOTE_CODE=true (the seed's default is false)."""
    remote_code = build_tiny_cosmos_like(tmp_path / "remote-code-model")
    settings = _settings(monkeypatch, {"VLM_MODEL_TO_USE": "transformers", "MODEL_PATH": str(remote_code)})
    assert settings.trust_remote_code is None
    with pytest.raises(ModelLoadError, match="runs only with VLM_TRUST_REMOTE_CODE=true"):
        load_vlm(settings)
    trusted = _settings(
        monkeypatch,
        {"VLM_MODEL_TO_USE": "transformers", "MODEL_PATH": str(remote_code), "VLM_TRUST_REMOTE_CODE": "true"},
    )
    with pytest.raises(ModelLoadError) as trusted_error:  # not a VLM; but its code was allowed to load
        load_vlm(trusted)
    assert "custom code" not in str(trusted_error.value)


def test_vllm_compatible_with_a_local_checkpoint_serves_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seed 002's Qwen3-VL sample form: VLM_MODEL_TO_USE=vllm-compatible and MODEL_PATH, no endpoint."""
    checkpoint = build_tiny_llava(tmp_path / "tiny-vl")
    vlm = load_vlm(
        _settings(monkeypatch, {"VLM_MODEL_TO_USE": "vllm-compatible", "MODEL_PATH": str(checkpoint)})
    )
    assert type(vlm).__name__ == "TransformersVLM" and vlm.id == "tiny-vl"


def test_openai_compat_with_only_an_openai_key_targets_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 002's GPT-4o sample sets no VIA_VLM_ENDPOINT: the endpoint is OpenAI's own."""
    settings = _settings(
        monkeypatch,
        {
            "VLM_MODEL_TO_USE": "openai-compat",
            "OPENAI_API_KEY": "sk-test",
            "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME": "gpt-4o",
        },
    )
    vlm: Any = load_vlm(settings)
    assert vlm.id == "gpt-4o" and str(vlm._client.base_url).startswith("https://api.openai.com/v1")
    with pytest.raises(ModelLoadError, match="needs VIA_VLM_ENDPOINT"):
        load_vlm(_settings(monkeypatch, {"VLM_MODEL_TO_USE": "openai-compat"}))


@pytest.mark.parametrize(
    ("model_path", "cli_spec"),
    [
        ("nvidia/tao/models/cosmos-embed1:v1.0", "nvidia/tao/cosmos-embed1:v1.0"),  # seed 001's example
        (
            "nim/nvidia/cosmos-reason2-8b:0303-fp8-dynamic-kv8",
            "nim/nvidia/cosmos-reason2-8b:0303-fp8-dynamic-kv8",
        ),
        ("nvidia/models/my-model:1", "nvidia/my-model:1"),
    ],
)
def test_ngc_model_paths_of_the_seeds(model_path: str, cli_spec: str) -> None:
    assert ngc_cli_spec(model_path) == cli_spec


def test_ngc_seed_example_asks_for_the_cli_not_a_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ngc CLI here
    cache = {"NGC_MODEL_CACHE": str(tmp_path)}
    settings = _settings(monkeypatch, {"MODEL_PATH": "ngc:nvidia/tao/models/cosmos-embed1:v1.0", **cache})
    with pytest.raises(ModelLoadError, match="needs the NGC CLI"):
        resolve_model_path(settings)
    with pytest.raises(ModelLoadError, match="expected ngc:<org>"):
        resolve_model_path(_settings(monkeypatch, {"MODEL_PATH": "ngc:just-a-name", **cache}))


def test_hugging_face_token_inside_a_git_url_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 002: `git:https://user:<token>@huggingface.co/Qwen/...` when HF_TOKEN is not set."""
    url = "https://user:hf_secret@huggingface.co/Qwen/Qwen3-VL-30B-A3B-Instruct"
    no_token, env_token = _settings(monkeypatch, {}), _settings(monkeypatch, {"HF_TOKEN": "hf_env"})
    assert hf_token_of(url, no_token) == "hf_secret"
    assert hf_token_of("https://huggingface.co/Qwen/X", env_token) == "hf_env"
    assert hf_token_of("https://huggingface.co/Qwen/X", no_token) is None


def test_gated_repo_error_never_shows_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = "git:https://user:hf_secret@huggingface.co/Qwen/Qwen3-VL-30B-A3B-Instruct"
    settings = _settings(monkeypatch, {"MODEL_PATH": url, "NGC_MODEL_CACHE": str(tmp_path)})
    with pytest.raises(ModelLoadError) as error:
        resolve_model_path(settings)
    assert "hf_secret" not in str(error.value) and "Qwen/Qwen3-VL-30B-A3B-Instruct" in str(error.value)


@pytest.mark.parametrize(
    ("core", "env", "bus"),
    [
        (VLM_CORE, {}, "kafka"),  # seed 002: KAFKA_ENABLED defaults to true on rt-vlm
        (VLM_CORE, {"KAFKA_ENABLED": "false"}, None),
        (VLM_CORE, {"KAFKA_ENABLED": ""}, "kafka"),
        (EMBED_CORE, {}, None),  # seed 001: false on rt-embed
        (EMBED_CORE, {"KAFKA_ENABLED": "true"}, "kafka"),
    ],
)
def test_kafka_default_per_service(
    monkeypatch: pytest.MonkeyPatch, core: Any, env: dict[str, str], bus: str | None
) -> None:
    # A port nothing listens on: the laptop without a broker.
    env = {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    publisher = MessagePublisher(core.name, _settings(monkeypatch, env), Metrics(), topics=core.topics)
    try:
        assert publisher.results_bus == bus
    finally:
        publisher.close()


def test_no_broker_costs_a_bounded_queue_one_warning_and_a_quick_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    with caplog.at_level(logging.WARNING):
        sink = KafkaSink(f"127.0.0.1:{free_port()}", metrics, queue_maxsize=5).start()
        accepted = [sink.produce("mdx-vlm-captions", b"x" * 10) for _ in range(8)]
        time.sleep(3)  # librdkafka retries the connection about twice a second meanwhile
    assert accepted == [True, True, True, True, True, False, False, False]  # bounded: the rest dropped
    assert metrics.bus_dropped.labels("kafka", "result")._value.get() == 3
    outage = [r for r in caplog.records if r.name == "rtvi.core.bus.kafka" and "broker problem" in r.message]
    assert len(outage) == 1, caplog.text  # one clear warning, not one per retry
    assert not [r for r in caplog.records if r.name == "rtvi.kafka.librdkafka"], caplog.text
    caplog.clear()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="rtvi.core.bus.kafka"):
        assert sink.close() == 5
    assert time.monotonic() - started < 3  # not the 10 s a reachable broker is given
    assert re.search(r"5 messages not delivered", caplog.text)


def _variable_rows() -> dict[str, tuple[str, str]]:
    doc = (Path(__file__).parents[2] / "docs" / "compatibility.md").read_text()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (\w+) \| (.*) \|$", doc, re.MULTILINE)
    return {name: (status, note) for name, status, note in rows}


def test_compatibility_table_covers_every_reference_variable() -> None:
    rows = _variable_rows()
    for compose in (EMBED_COMPOSE_ENV, VLM_COMPOSE_ENV):
        missing = set(compose_environment(compose, {})) - set(rows)
        assert not missing, f"docs/compatibility.md has no row for {sorted(missing)}"


def test_compatibility_table_rows_are_true() -> None:
    for name, (status, note) in _variable_rows().items():
        if status in ("same", "mapped"):
            assert name in SETTINGS_VARIABLES, f"{name} is documented as read, but Settings does not read it"
        elif status == "warned":
            assert name in NO_EFFECT and NO_EFFECT[name].reason in note, name
            assert name not in SETTINGS_VARIABLES
        elif status == "library":
            assert name in LIBRARY_VARIABLES | {"OTEL_SERVICE_NAME"}, name
        else:
            assert status == "compose", f"{name}: unknown status {status!r}"
            assert name not in NO_EFFECT and (name not in SETTINGS_VARIABLES or name == "BACKEND_PORT"), name
