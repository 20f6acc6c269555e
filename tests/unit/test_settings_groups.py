"""The settings groups (settings.py): every variable belongs to a component's group or to the short
service-wide list, a group's field is the flat field of the same name and type, and a value read from
the environment (aliases, validators and empty-means-default included) arrives in every group that holds
it, frozen."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from rtvi.settings import GROUPS, SERVICE_WIDE, Settings

FLAT = Settings.model_fields


def _names(group: type) -> set[str]:
    return {f.name for f in dataclasses.fields(group)}


def _env_names() -> set[str]:
    names = set()
    for f in FLAT.values():
        alias = f.validation_alias
        names |= {alias} if isinstance(alias, str) else {str(c) for c in getattr(alias, "choices", [])}
    return names


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _env_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_variable_belongs_to_a_group_or_is_service_wide() -> None:
    grouped = set().union(*(_names(g) for g in GROUPS.values()))
    assert not set(FLAT) - grouped - SERVICE_WIDE, "a new setting needs a group (or SERVICE_WIDE)"
    assert not grouped - set(FLAT), "a group field that is not a setting"
    assert not SERVICE_WIDE - set(FLAT), "SERVICE_WIDE names a field Settings does not have"
    assert not SERVICE_WIDE & grouped, "a service-wide setting is also in a group"


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_a_group_field_is_the_flat_field_of_the_same_type(name: str) -> None:
    group = GROUPS[name]
    for field, hint in typing.get_type_hints(group).items():
        assert hint == FLAT[field].annotation, f"{group.__name__}.{field}"
    secret = {f.name for f in dataclasses.fields(group) if FLAT[f.name].repr is False}
    assert secret <= {f.name for f in dataclasses.fields(group) if not f.repr}, "secrets stay out of repr"
    assert isinstance(getattr(Settings(), name), group)


def test_values_from_the_environment_arrive_in_their_groups(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "ASSET_STORAGE_DIR": str(tmp_path),
        "S3_ENDPOINT_URL": "",  # empty: the default
        "AWS_ENDPOINT_URL_S3": "http://s3.local:9000",  # the alias
        "ASSET_DOWNLOAD_MAX_REDIRECTS": "50",  # clamped to 10 by the validator
        "FILE_URL_ALLOWED_DIRS": f"{tmp_path},",
        "VSS_SKIP_INPUT_MEDIA_VERIFICATION": "yes",  # any non-empty value skips
        "RTVI_RTSP_TIMEOUT": "1500",
        "RTVI_RTSP_ALLOWED_HOSTS": "cam.example,10.0.0.0/8",
        "KAFKA_TOPIC": "legacy-topic",
        "MESSAGE_BUS": " Redis ",
        "MILVUS_URI": "http://milvus:19530",
        "RTVI_CLUSTER_PARTITIONS": "3",
        "RTVI_REPLICA_ID": "replica-a",
        "VLM_PROMPT_MAX_LENGTH": "99",
        "PLACE_NAME": "Dock 7",
        "NVIDIA_API_KEY": "nvapi-k",
        "MODEL_PATH": "bundled",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    s = Settings()
    assert s.storage.asset_storage_dir == tmp_path
    assert s.storage.s3_endpoint_url == s.ingest.s3_endpoint_url == "http://s3.local:9000"
    assert s.ingest.asset_download_max_redirects == 10
    assert s.ingest.allowed_local_dirs == [tmp_path.resolve()]
    assert s.ingest.skip_media_verification and s.live.skip_media_verification
    assert s.live.rtsp_timeout_ms == 1500
    hosts = s.live.rtsp_allowed_hosts
    assert hosts is not None and hosts.names == {"cam.example"} and len(hosts.networks) == 1
    assert (s.bus.message_bus, s.bus.message_bus_topic) == ("redis", "legacy-topic")
    assert s.bus.replica_id == s.cluster.replica_id == "replica-a"
    assert (s.index.milvus_uri, s.index.search_index) == ("http://milvus:19530", True)
    assert s.cluster.cluster_partitions == 3
    assert (s.vlm.vlm_prompt_max_length, s.vlm.place_name) == (99, "Dock 7")
    assert s.model.ngc_api_key == s.model.nvidia_api_key == "nvapi-k"
    assert s.model.endpoint_api_key == s.endpoint_api_key == "nvapi-k"
    assert s.model.uses_bundled_model and s.uses_bundled_model
    # Every group field equals its flat field, whatever the group.
    for name, group in GROUPS.items():
        view = getattr(s, name)
        for field in _names(group):
            assert getattr(view, field) == getattr(s, field), f"{name}.{field}"


def test_groups_are_frozen_and_keep_secrets_out_of_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_PASSWORD", "hunter2")
    clean_env.setenv("MILVUS_TOKEN", "root:Milvus")
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bus.redis_port = 1  # type: ignore[misc]
    assert "hunter2" not in repr(s.bus) and "root:Milvus" not in repr(s.index)
