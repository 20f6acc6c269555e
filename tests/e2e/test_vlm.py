"""The VLM service end to end: `rtvi serve vlm` processes, a real tansu broker, the official openai SDK.

- `offline`: no model configured -> the offline label model (names the cat and the rocket);
- `scripted` + `endpoint`: the openai-compat backend against a scripted OpenAI-compatible server over a
  real socket (answers chosen by the prompt: "SAY:<answer>"), for exact alert decisions;
- `chained`: the openai-compat backend against the `offline` instance (our own chat endpoint).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rtvi.core.bus.schema import ext_pb2
from rtvi.core.bus.schema import schema_pb2 as nv
from tests.conftest import upload
from tests.e2e.test_cli import as_json, ok, rtvi
from tests.kafka_redis import TansuBroker, consume
from tests.media_factory import loudest_hz, make_clip, make_clip_from_images, scene_photos
from tests.metrics_scrape import SPEC_METRICS, VLM_ONLY_METRICS, Scrape, exported_families
from tests.model_factory import build_tiny_llava
from tests.rtsp_server import RtspServer, gst_available
from tests.scripted_vlm import ScriptedVlmServer
from tests.servers import RtviServer, free_port
from tests.sse_client import END, SseReader

ALERT = "Is there a cat in the frame? Respond in this format:\nAnomaly Detected: Yes/No\nReason: [why]"
INCIDENTS = "vlm-incidents-test"


def _kafka_env(broker: TansuBroker, topic: str) -> dict[str, str]:
    return {
        "MESSAGE_BUS": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "MESSAGE_BUS_TOPIC": topic,
        "KAFKA_INCIDENT_TOPIC": INCIDENTS,
    }


@pytest.fixture(scope="module")
def offline(
    tmp_path_factory: pytest.TempPathFactory, broker: TansuBroker, media: dict[str, Path]
) -> Iterator[RtviServer]:
    base = tmp_path_factory.mktemp("vlm-offline")
    env = {
        **_kafka_env(broker, "vlm-offline-captions"),
        "FILE_URL_ALLOWED_DIRS": str(media["cat_jpg"].parent),
    }
    srv = RtviServer(base / "assets", env=env, service="vlm").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, broker: TansuBroker, scripted: ScriptedVlmServer
) -> Iterator[RtviServer]:
    base = tmp_path_factory.mktemp("vlm-endpoint")
    env = {
        **_kafka_env(broker, "vlm-endpoint-captions"),
        "VIA_VLM_ENDPOINT": scripted.url,
        "VIA_VLM_ENDPOINT_MAX_RETRIES": "2",
        "PLACE_NAME": "Dock 7",
        "ANALYTICS_MODULE_ID": "forklift-watch",
        "VLM_MODEL_SUPPORTS_AUDIO": "true",  # the scripted endpoint stands for a model that hears
        "RTVI_ALERT_WARMUP_CHUNKS": "3",  # alert_gate: a short warm-up for short clips
    }
    srv = RtviServer(base / "assets", env=env, service="vlm").start()
    yield srv
    srv.stop()


def _model(srv: RtviServer) -> str:
    return str(httpx.get(srv.url + "/v1/models").json()["data"][0]["id"])


def _file_ids(srv: RtviServer) -> set[str]:
    return {f["id"] for f in httpx.get(srv.url + "/v1/files", params={"purpose": "vision"}).json()["data"]}


def _caption(c: httpx.Client, model: str, file_id: str, prompt: str, **kw: Any) -> httpx.Response:
    return c.post("/v1/generate_captions", json={"id": file_id, "model": model, "prompt": prompt, **kw})


# --- the offline default ------------------------------------------------------------------------------
def test_offline_model_names_the_cat_and_the_rocket(offline: RtviServer, media: dict[str, Path]) -> None:
    card = httpx.get(offline.url + "/v1/models").json()["data"][0]
    assert set(card) == {"id", "created", "object", "owned_by", "api_type"} and card["owned_by"] == "rtvi"
    model = httpx.get(offline.url + "/v1/metadata").json()["model"]
    assert model["id"] == card["id"] and model["language_model"] is False and model["api_type"] == "vlm"
    with offline.client() as c:
        fid = upload(c, media["cat_rocket"]).json()["id"]
        r = _caption(c, card["id"], fid, "Describe what is happening", chunk_duration=10)
        assert r.status_code == 200, r.text
        body = r.json()
    chunks = body["chunk_responses"]
    assert [ch["chunk_id"] for ch in chunks] == [0, 1]
    assert [(ch["start_time"], ch["end_time"]) for ch in chunks] == [("0.0", "10.0"), ("10.0", "20.0")]
    assert "cat" in chunks[0]["content"] and "cat" not in chunks[1]["content"]
    assert any(w in chunks[1]["content"] for w in ("missile", "projectile", "rocket", "space shuttle"))
    assert all(ch["frame_count"] == 30 and ch["output_tokens"] > 0 for ch in chunks)  # the spec default
    assert "audio_transcript" not in chunks[0]  # null fields are left out
    usage = body["usage"]
    assert usage["total_chunks_processed"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_offline_model_sees_people(offline: RtviServer, tmp_path: Path) -> None:
    """Issue 11: the person detector reaches captions and alerts of the offline default."""
    photos = scene_photos()
    clip = make_clip_from_images(
        tmp_path / "people.mp4",
        [photos["astronaut"], photos["cat"]],
        seconds_each=4,
        fps=5,
        width=320,
        height=320,
    )
    person_alert = "Is there a person in the frame?\nAnomaly Detected: Yes/No"
    model = _model(offline)
    with offline.client() as c:
        fid = upload(c, clip).json()["id"]
        captions = _caption(c, model, fid, "Describe the scene", chunk_duration=4).json()["chunk_responses"]
        alerts = _caption(c, model, fid, person_alert, chunk_duration=4).json()["chunk_responses"]
        c.delete(f"/v1/files/{fid}")
    assert "a person (" in captions[0]["content"] and "person" not in captions[1]["content"], captions
    assert [a["content"].splitlines()[0] for a in alerts] == ["Anomaly Detected: Yes", "Anomaly Detected: No"]
    assert [a["incident_detected"] for a in alerts] == [True, False]


def test_offline_alert_raises_an_incident_on_kafka(
    offline: RtviServer, broker: TansuBroker, media: dict[str, Path]
) -> None:
    model = _model(offline)
    with offline.client() as c:
        fid = upload(c, media["cat_rocket"], creation_time="2024-06-09T18:32:11.123Z").json()["id"]
        before = Scrape(offline.url)
        r = _caption(c, model, fid, ALERT, chunk_duration=10, alert_category="cat-on-dock")
    body = r.json()
    chunks = body["chunk_responses"]
    assert chunks[0]["content"].startswith("Anomaly Detected: Yes") and chunks[0]["incident_detected"]
    assert chunks[1]["content"].startswith("Anomaly Detected: No") and not chunks[1]["incident_detected"]
    prefix = body["id"].encode()
    captions = consume(broker.bootstrap, "vlm-offline-captions", 2, key_prefix=prefix)
    assert sorted(m.key() for m in captions) == [prefix + b":0", prefix + b":1"]
    for m in captions:
        assert dict(m.headers() or [])["message_type"] == b"vision_llm"
        msg = nv.VisionLLM.FromString(m.value())
        idx = int(msg.info["chunkIdx"])
        assert msg.llm.queries[0].response == chunks[idx]["content"]
        assert msg.llm.queries[0].prompts["user"] == ALERT
        assert msg.info["incidentDetected"] == ("true" if idx == 0 else "false")
        assert msg.llm.info["modelApiType"] == "vlm" and msg.version == model
    incidents = consume(broker.bootstrap, INCIDENTS, 2, key_prefix=prefix, timeout=5)
    assert [m.key() for m in incidents] == [prefix + b":0"]  # the rocket chunk raised none
    assert dict(incidents[0].headers() or [])["message_type"] == b"incident"
    inc = ext_pb2.Incident.FromString(incidents[0].value())
    assert inc.isAnomaly and inc.category == "cat-on-dock" and inc.sensorId == fid
    assert inc.place.name == "Dock Entrance-East" and inc.place.location.lat == pytest.approx(37.3706)
    assert inc.analyticsModule.id == "vlm-activity-detector" and inc.analyticsModule.version == model
    assert inc.info["verdict"] == "confirmed" and inc.info["triggerPhrase"] == "Anomaly Detected: Yes"
    assert inc.info["alertCategory"] == "cat-on-dock" and inc.info["chunkIdx"] == "0"
    assert list(inc.objectIds) == [fid]
    assert inc.timestamp.ToJsonString() == "2024-06-09T18:32:11.123Z"  # creation time + PTS
    after = Scrape(offline.url)
    assert after.value("rtvi_incidents_total") - before.value("rtvi_incidents_total") == 1  # the cat chunk
    chunks_out = after.value("vlm_output_tokens_per_chunk_count")
    assert chunks_out - before.value("vlm_output_tokens_per_chunk_count") == 2  # both chunks' tokens
    missing = [n for n in [*SPEC_METRICS, *VLM_ONLY_METRICS] if n not in exported_families(after.text)]
    assert not missing, f"the VLM service lacks {missing}"


def test_captions_stream_as_sse_with_usage_last(offline: RtviServer, media: dict[str, Path]) -> None:
    model = _model(offline)
    with offline.client() as c:
        fid = upload(c, media["cat_rocket"]).json()["id"]
    reader = SseReader(
        offline.url,
        {
            "id": fid,
            "model": model,
            "prompt": "Describe",
            "stream": True,
            "chunk_duration": 10,
            "num_frames_per_second_or_fixed_frames_chunk": 4,
            "stream_options": {"include_usage": True},
        },
        path="/v1/generate_captions",
    )
    events = [reader.next(60) for _ in range(4)]
    assert events[3] is END
    first, second, final = events[:3]
    assert first["usage"] is None and first["chunk_responses"][0]["frame_count"] == 4
    assert second["chunk_responses"][0]["chunk_id"] == 1
    assert final["media_info"] is None and final["usage"]["total_chunks_processed"] == 2
    assert final["usage"]["completion_tokens"] == sum(
        e["chunk_responses"][0]["output_tokens"] for e in (first, second)
    )


def test_the_cli_prints_captions_as_they_arrive(offline: RtviServer, media: dict[str, Path]) -> None:
    """`rtvi caption FILE --prompt ...`: one line per chunk for people, one document with --json."""
    shown = ok(rtvi("caption", media["cat_rocket"], "--prompt", "Describe", url=offline.url, key=None))
    lines = shown.splitlines()
    assert [line.split("]")[0] for line in lines] == ["[0.0-10.0", "[10.0-20.0"]
    assert "cat" in lines[0] and "cat" not in lines[1]
    doc = as_json(
        rtvi("caption", media["cat_rocket"], "--prompt", ALERT, "--json", url=offline.url, key=None)
    )
    assert doc["source"] == "cat_rocket.mp4" and doc["prompt"] == ALERT
    assert [c["chunk_id"] for c in doc["chunks"]] == [0, 1]
    assert doc["chunks"][0]["content"].startswith("Anomaly Detected: Yes")


def test_caption_requests_are_validated(offline: RtviServer, media: dict[str, Path]) -> None:
    model = _model(offline)
    with offline.client() as c:
        fid = upload(c, media["cat_jpg"], media_type="image").json()["id"]

        def err(prompt: str = "Describe", **kw: Any) -> tuple[int, str, str]:
            r = _caption(c, model, fid, prompt, **kw)
            return r.status_code, r.json().get("code", ""), r.json().get("message", "")

        assert err("  ")[:2] == (422, "InvalidParameters") and err("  ")[2] == "prompt must not be empty"
        status, code, message = err("x" * 10241)
        assert (status, code) == (422, "InvalidParameters") and "VLM_PROMPT_MAX_LENGTH" in message
        assert "VLM_MAX_GENERATION_TOKENS" in err(max_tokens=16385)[2]
        r = c.post("/v1/generate_captions", json={"id": fid, "model": "other", "prompt": "x"})
        assert (r.status_code, r.json()["code"]) == (400, "BadParameters")
        assert err(api_type="embedding")[:2] == (400, "BadParameters")
        assert err(ignore_eos=True, response_format={"type": "json_object"})[:2] == (422, "InvalidParameters")
        assert err(min_tokens=4, response_format={"type": "choice", "choices": ["a"]})[0] == 422
        assert err(response_format={"type": "choice", "choices": ["Yes", "Yes"]})[0] == 422
        assert err(response_format={"type": "json_schema"})[0] == 422
        bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
        assert err(response_format=bad_schema)[0] == 422
        assert err(media_io_kwargs={"video": {"fps": 1, "num_frames": 4}})[0] == 422
        assert err(enable_audio=True)[:2] == (400, "BadParameters")
        assert err(vlm_input_width=320)[:2] == (400, "BadParameters")
        assert err(unknown_field=1)[0] == 422
        # choices go with the choice format only (the reference answers 422)
        status, code, message = err(response_format={"type": "text", "choices": ["Yes", "No"]})
        assert (status, code) == (422, "InvalidParameters") and "choices" in message
        r = c.post("/v1/generate_captions", json={"url": "rtsp://127.0.0.1/x", "model": model, "prompt": "x"})
        assert r.status_code == 422
        r = c.post("/v1/completions", json={"model": model, "prompt": "hello"})
        assert (r.status_code, r.json()["code"]) == (400, "InvalidParameters")
        r = c.post("/v1/completions", json={"model": "nope", "prompt": "hello"})
        assert (r.status_code, r.json()["code"]) == (400, "BadParameters")
    for path, message in (
        ("/v1/health/live", "Service is healthy"),
        ("/v1/health/ready", "Service is ready."),
    ):
        assert httpx.get(offline.url + path).json() == {"object": "health.response", "message": message}


def test_chat_with_the_openai_sdk(offline: RtviServer, media: dict[str, Path]) -> None:
    model = _model(offline)
    client = openai.OpenAI(base_url=offline.url + "/v1", api_key="unused")
    with offline.client() as c:
        fid = upload(c, media["cat_jpg"], media_type="image").json()["id"]
    by_id = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is this?"}], extra_body={"id": fid}
    )
    assert "cat" in (by_id.choices[0].message.content or "")
    assert by_id.usage is not None and by_id.usage.total_tokens > 0
    rocket = base64.b64encode(media["rocket_png"].read_bytes()).decode()
    files_before = _file_ids(offline)
    by_data = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this image."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{rocket}"}},
                ],
            },
        ],
    )
    assert any(w in (by_data.choices[0].message.content or "") for w in ("missile", "projectile", "rocket"))
    text_only = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi!"}])
    assert "not a language model" in (text_only.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is this?"}],
        extra_body={"id": fid},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "cat" in "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is not None
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "system", "content": "only system"}])
    assert _file_ids(offline) == files_before  # the data: image's temporary asset is gone


def _chat(srv: RtviServer, prompt: str = "SAY:No", **extra: Any) -> httpx.Response:
    body = {"model": _model(srv), "messages": [{"role": "user", "content": prompt}], **extra}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=120)


def test_chat_fields_are_honoured_or_refused_never_ignored(
    offline: RtviServer, media: dict[str, Path]
) -> None:
    """The chat schema refuses unknown fields (spec §0): a field no backend applies is a 422 naming it
    (with what to use instead), never silently ignored; guided_choice is honoured by the offline model."""
    for field, value, hint in (
        ("unknown_field", 1, "Extra inputs are not permitted"),
        ("repetition_penalty", 1.1, "no backend of this service applies it"),
        ("guided_regex", "Yes|No", "guided_choice"),
        ("frames_per_chunk", 8, "num_frames_per_second_or_fixed_frames_chunk"),
    ):
        given: dict[str, Any] = {field: value}
        r = _chat(offline, **given)
        assert (r.status_code, r.json()["code"]) == (422, "InvalidParameters"), (field, r.text)
        assert r.json()["message"].startswith(f"('body', '{field}'): ") and hint in r.json()["message"], (
            r.text
        )
    bad: dict[str, Any]
    for bad in (
        {"guided_choice": ["Yes", "Yes"]},
        {"guided_choice": []},
        {"guided_choice": ["Yes"], "guided_json": {"type": "object"}},
        {"guided_choice": ["Yes"], "response_format": {"type": "json_object"}},
        {"guided_json": {"type": 12}},  # not a JSON schema
    ):
        r = _chat(offline, **bad)
        assert (r.status_code, r.json()["code"]) == (422, "InvalidParameters"), (bad, r.text)
    with offline.client() as c:
        fid = upload(c, media["cat_jpg"], media_type="image").json()["id"]
    r = _chat(offline, "Is there a cat in the frame?", id=fid, guided_choice=["Yes", "No"])
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Yes"


def test_a_url_request_keeps_its_asset_for_the_client_to_delete(
    offline: RtviServer, media: dict[str, Path]
) -> None:
    """A generate request with a `url` registers its input as an asset the client owns: the response's
    `id` names it when the request gave none; the client deletes it (200, then 400 "No such file")."""
    model = _model(offline)
    before = _file_ids(offline)
    with offline.client() as c:
        for url in (f"file://{media['cat_jpg']}", f"file://{media['rocket_png']}"):
            body = {"url": url, "media_type": "image", "model": model, "prompt": "Describe"}
            r = c.post("/v1/generate_captions", json=body)
            assert r.status_code == 200, r.text
            asset_id = r.json()["id"]
            assert _file_ids(offline) == before | {asset_id}
            again = c.post(
                "/v1/generate_captions", json={"id": asset_id, "model": model, "prompt": "Describe"}
            )
            assert again.status_code == 200 and again.json()["id"] != asset_id  # a new request on the asset
            deleted = c.delete(f"/v1/files/{asset_id}")
            assert deleted.json() == {"id": asset_id, "object": "file", "deleted": True}
            twice = c.delete(f"/v1/files/{asset_id}")
            assert twice.status_code == 400 and "No such file" in twice.json()["message"]
        # a client that names the asset gets that id back as the asset's
        named = str(uuid.uuid4())
        r = c.post(
            "/v1/generate_captions",
            json={"id": named, "url": f"file://{media['cat_jpg']}", "media_type": "image", "model": model,
                  "prompt": "Describe"},
        )  # fmt: skip
        assert r.status_code == 200 and named in _file_ids(offline)
        assert c.delete(f"/v1/files/{named}").status_code == 200
        # chat media given as a URL stays temporary: the chat response has no place to name it
    assert _file_ids(offline) == before


# --- the openai-compat backend against a scripted endpoint -------------------------------------------
SCRIPTED_VERDICTS = [
    ("SAY:Anomaly Detected: Yes\\nReason: a forklift is too close to a worker", True),
    ("SAY:**Anomaly Detected:** YES", True),
    ("SAY:Yes, the worker has no vest.", True),
    ("SAY:I can see the worker's eyes clearly.", False),  # the reference's substring rule fires here
    ("SAY:Nothing happened yesterday or today.", False),
    ("SAY:Anomaly Detected: No\\nReason: all clear, nothing untrue about it", False),
    ("SAY:No.", False),
]


def test_alert_decisions_are_structured(
    endpoint: RtviServer, broker: TansuBroker, media: dict[str, Path]
) -> None:
    with endpoint.client() as c:
        fid = upload(c, media["cat_jpg"], media_type="image").json()["id"]
        for prompt, expected in SCRIPTED_VERDICTS:
            body = _caption(c, "scripted-vlm", fid, prompt).json()
            assert body["chunk_responses"][0]["incident_detected"] is expected, (prompt, body)
            incidents = consume(broker.bootstrap, INCIDENTS, 1, key_prefix=body["id"].encode(), timeout=3)
            assert len(incidents) == int(expected), prompt
            if expected:
                inc = ext_pb2.Incident.FromString(incidents[0].value())
                assert inc.place.name == "Dock 7" and inc.analyticsModule.id == "forklift-watch"
                assert inc.category == "vlm-alert" and inc.info["verdict"] == "confirmed"


def test_the_alert_gate_calls_the_vlm_only_on_chunks_that_stand_out(
    endpoint: RtviServer, scripted: ScriptedVlmServer, media: dict[str, Path]
) -> None:
    """cat 0-10 s, rocket 10-20 s, coffee 20-30 s, 2 s chunks, gated on "coffee": after the warm-up (3
    chunks, sent) the cat and rocket chunks are kept from the VLM, the coffee's arrival reaches it."""
    prompt = "SAY:gated answer"
    with endpoint.client() as c:
        vid = upload(c, media["three_scenes"]).json()["id"]
        gate = {"query": "coffee", "sensitivity": 0.5}
        r = _caption(c, "scripted-vlm", vid, prompt, chunk_duration=2, alert_gate=gate)
        assert r.status_code == 200, r.text
        body = r.json()
        bad = _caption(c, "scripted-vlm", vid, prompt, alert_gate={"query": "x", "rule_id": "0" * 32})
        assert bad.status_code == 422 and "one of them" in bad.json()["message"]
        unknown = _caption(c, "scripted-vlm", vid, prompt, alert_gate={"rule_id": "0" * 32})
        assert unknown.status_code == 400 and "no alert rule" in unknown.json()["message"]
    chunks = body["chunk_responses"]
    assert len(chunks) == 15
    gates = [ch["alert_gate"] for ch in chunks]
    assert [g["threshold"] for g in gates[:3]] == [None] * 3 and all(g["passed"] for g in gates[:3])
    skipped = [i for i, g in enumerate(gates) if not g["passed"]]
    assert set(range(3, 10)) <= set(skipped), gates  # every cat and rocket chunk after the warm-up
    assert gates[10]["passed"] and gates[10]["score"] > gates[10]["threshold"]  # coffee comes in
    assert all(chunks[i]["content"] == "" for i in skipped)
    assert all(chunks[i]["content"] == "gated answer" for i in range(15) if i not in skipped)
    assert body["usage"]["vlm_calls_saved"] == len(skipped) >= 7
    sent = [q for q in scripted.requests() if q["prompt"] == prompt]
    assert len(sent) == 15 - len(skipped)


def test_structured_output_reasoning_and_frames_reach_the_endpoint(
    endpoint: RtviServer, scripted: ScriptedVlmServer, broker: TansuBroker, media: dict[str, Path]
) -> None:
    schema = {
        "type": "object",
        "properties": {"decision": {"type": "string", "enum": ["Yes", "No"]}, "reason": {"type": "string"}},
        "required": ["decision"],
    }
    json_schema = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    with endpoint.client() as c:
        vid = upload(c, media["cat_rocket"]).json()["id"]
        r = _caption(
            c,
            "scripted-vlm",
            vid,
            'SAY:{"decision": "Yes", "reason": "cat"}',
            chunk_duration=10,
            num_frames_per_second_or_fixed_frames_chunk=4,
            system_prompt="You are a safety monitor.",
            response_format=json_schema,
            vlm_input_width=64,
            vlm_input_height=48,
            seed=7,
        )
        chunks = r.json()["chunk_responses"]
        assert [ch["incident_detected"] for ch in chunks] == [True, True]
        asked = scripted.requests()[-2:]
        assert [a["images"] for a in asked] == [4, 4] and asked[0]["system"] == "You are a safety monitor."
        assert asked[0]["response_format"]["json_schema"]["schema"] == schema and asked[0]["seed"] == 7
        maybe = _caption(c, "scripted-vlm", vid, 'SAY:{"decision": "Maybe"}', response_format=json_schema)
        chunk = maybe.json()["chunk_responses"][0]
        assert chunk["incident_detected"] is False and "decision" in chunk["response_format_error"]
        choice = {"type": "choice", "choices": ["Yes", "No"]}
        picked = _caption(
            c, "scripted-vlm", vid, "SAY:No", response_format=choice, media_io_kwargs={"video": {"fps": 0.5}}
        )
        assert scripted.requests()[-1]["guided_choice"] == ["Yes", "No"]
        assert scripted.requests()[-1]["images"] == 10  # 0.5 fps x the 20 s file
        assert picked.json()["chunk_responses"][0]["incident_detected"] is False
        thought = _caption(
            c, "scripted-vlm", vid, "SAY:<think>The cat sits still.</think>Yes", enable_reasoning=True
        )
    body = thought.json()
    ch = body["chunk_responses"][0]
    assert (ch["content"], ch["reasoning_description"]) == ("Yes", "The cat sits still.")
    msg = nv.VisionLLM.FromString(
        consume(broker.bootstrap, "vlm-endpoint-captions", 1, key_prefix=body["id"].encode())[0].value()
    )
    assert msg.info["reasoning"] == msg.info["reasoningDescription"] == "The cat sits still."
    assert msg.llm.queries[0].response == "Yes" and msg.llm.info["enableReasoning"] == "true"


def test_each_chunks_sound_reaches_a_model_that_hears(
    endpoint: RtviServer, scripted: ScriptedVlmServer, offline: RtviServer, tmp_path: Path
) -> None:
    # A tone that rises by 100 Hz every second: chunk k of 1 s must carry (300 + 100k) Hz, and only it.
    clip = make_clip(tmp_path / "tone.mp4", seconds=3, fps=10, tone=lambda s: 300 + 100 * s)
    assert httpx.get(endpoint.url + "/v1/models").json()["audio_support"] is True
    assert httpx.get(offline.url + "/v1/models").json()["audio_support"] is False
    with endpoint.client() as c:
        vid = upload(c, clip).json()["id"]
        r = _caption(c, "scripted-vlm", vid, "SAY:A rising tone.", chunk_duration=1, enable_audio=True)
        assert r.status_code == 200, r.text
        assert len(r.json()["chunk_responses"]) == 3
        heard = [scripted_request["audio"] for scripted_request in scripted.requests()[-3:]]
        assert all(len(a) == 1 for a in heard)
        assert [loudest_hz(base64.b64decode(a[0])) for a in heard] == [(300, 1), (400, 1), (500, 1)]
        _caption(c, "scripted-vlm", vid, "SAY:Silent.", chunk_duration=1)
        assert scripted.requests()[-1]["audio"] == []  # only when asked for


def test_endpoint_failures_retry_and_surface(endpoint: RtviServer, media: dict[str, Path]) -> None:
    with endpoint.client() as c:
        fid = upload(c, media["cat_jpg"], media_type="image").json()["id"]
        retried = _caption(c, "scripted-vlm", fid, f"FAIL_ONCE:503 SAY:fine {uuid.uuid4()}")
        assert retried.status_code == 200 and retried.json()["chunk_responses"][0]["content"].startswith(
            "fine"
        )
        refused = _caption(c, "scripted-vlm", fid, f"FAIL_ONCE:400 {uuid.uuid4()}")
        assert (refused.status_code, refused.json()["code"]) == (400, "RequestError")
        assert "scripted failure 400" in refused.json()["message"]


def test_text_chat_streams_tokens_from_the_endpoint(
    endpoint: RtviServer, scripted: ScriptedVlmServer
) -> None:
    client = openai.OpenAI(base_url=endpoint.url + "/v1", api_key="unused")
    history = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "SAY:one two three four"},
    ]
    stream = client.chat.completions.create(
        model="scripted-vlm", messages=history, stream=True, max_tokens=20
    )  # type: ignore[arg-type]
    deltas = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    assert len(deltas) >= 4 and "".join(deltas) == "one two three four"
    asked = scripted.requests()[-1]
    assert asked["turns"] == 4 and asked["system"] == "Be terse." and asked["max_tokens"] == 20
    plain = client.chat.completions.create(model="scripted-vlm", messages=history)  # type: ignore[arg-type]
    assert plain.choices[0].message.content == "one two three four"
    assert plain.usage is not None and plain.usage.completion_tokens == 4


def test_guided_decoding_fields_reach_the_endpoint(endpoint: RtviServer, scripted: ScriptedVlmServer) -> None:
    """vLLM's guided_choice goes to an OpenAI-compatible endpoint as guided_choice, guided_json as a
    json_schema response_format (the same guided decoding in vLLM)."""
    r = _chat(endpoint, guided_choice=["Yes", "No"])
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "No", r.text
    assert scripted.requests()[-1]["guided_choice"] == ["Yes", "No"]
    schema = {"type": "object", "properties": {"decision": {"type": "string"}}, "required": ["decision"]}
    r = _chat(endpoint, 'SAY:{"decision": "No"}', guided_json=schema)
    assert r.status_code == 200, r.text
    assert scripted.requests()[-1]["response_format"]["json_schema"]["schema"] == schema
    r = _chat(endpoint, repetition_penalty=1.2)
    assert r.status_code == 422 and "repetition_penalty" in r.json()["message"]


def test_a_second_instance_of_our_service_as_the_endpoint(
    tmp_path: Path, offline: RtviServer, media: dict[str, Path]
) -> None:
    env = {"VIA_VLM_ENDPOINT": offline.url + "/v1", "VLM_MODEL_TO_USE": "openai-compat"}
    chained = RtviServer(tmp_path / "assets", env=env, service="vlm").start()
    try:
        assert _model(chained) == _model(offline)
        with chained.client() as c:
            fid = upload(c, media["cat_rocket"]).json()["id"]
            r = _caption(
                c,
                _model(chained),
                fid,
                "Describe",
                chunk_duration=10,
                num_frames_per_second_or_fixed_frames_chunk=2,
            )
        contents = [ch["content"] for ch in r.json()["chunk_responses"]]
        assert "cat" in contents[0] and "cat" not in contents[1]
    finally:
        chained.stop()


def _drain(reader: SseReader, limit: int = 10) -> object:
    """The reader's events up to [DONE] (a few chunks may still arrive first); -> END, or the last event."""
    event: object = None
    for _ in range(limit):
        event = reader.next(20)
        if event is END:
            break
    return event


# --- live streams -------------------------------------------------------------------------------------
@pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server (python3-gi) is not installed")
def test_live_streams_are_captioned_without_audio(endpoint: RtviServer, tmp_path: Path) -> None:
    camera = RtspServer(free_port(), tmp_path).start()
    try:
        with endpoint.client() as c:
            r = c.post(
                "/v1/streams/add", json={"streams": [{"liveStreamUrl": camera.url, "description": "x"}]}
            )
            sid = r.json()["results"][0]["id"]
            r = _caption(c, "scripted-vlm", sid, "SAY:x", chunk_duration=2, enable_audio=True, stream=True)
            assert (r.status_code, r.json()["code"]) == (400, "BadParameters"), r.text
            assert "live streams" in r.json()["message"]
            assert c.delete(f"/v1/streams/delete/{sid}").status_code == 200  # nothing was left running
    finally:
        camera.kill()


@pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server (python3-gi) is not installed")
def test_two_caption_requests_share_one_decoder_and_stop_separately(
    offline: RtviServer, tmp_path: Path
) -> None:
    camera = RtspServer(free_port(), tmp_path).start()
    try:
        model = _model(offline)
        with offline.client() as c:
            r = c.post(
                "/v1/streams/add", json={"streams": [{"liveStreamUrl": camera.url, "description": "dock"}]}
            )
            sid = r.json()["results"][0]["id"]
            body = {
                "id": sid,
                "model": model,
                "stream": True,
                "chunk_duration": 2,
                "num_frames_per_second_or_fixed_frames_chunk": 2,
            }
            a = SseReader(offline.url, {**body, "prompt": "Describe"}, path="/v1/generate_captions")
            b = SseReader(offline.url, {**body, "prompt": ALERT}, path="/v1/generate_captions")
            first_a, first_b = a.chunks(1, timeout=30)[0], b.chunks(1, timeout=30)[0]
            assert first_a["id"] != first_b["id"]
            assert first_b["chunk_responses"][0]["content"].startswith("Anomaly Detected:")
            assert Scrape(offline.url).value("live_decoders_open") == 1
            r = c.delete(f"/v1/generate_captions/{sid}", params={"request_id": first_a["id"]})
            assert r.status_code == 200, r.text
            assert _drain(a) == END  # its reader got [DONE]
            assert b.chunks(1, timeout=30)[0]["id"] == first_b["id"]  # the other request goes on
            r = c.delete(f"/v1/generate_captions/{sid}", params={"request_id": first_a["id"]})
            assert (r.status_code, r.json()["code"]) == (400, "InvalidParameterValue")
            assert c.delete(f"/v1/generate_captions/{sid}").status_code == 200
            assert _drain(b) == END
            assert c.delete(f"/v1/streams/delete/{sid}").status_code == 200
    finally:
        camera.kill()


@pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server (python3-gi) is not installed")
def test_cv_flat_add_with_a_prompt_starts_captioning(
    offline: RtviServer, broker: TansuBroker, tmp_path: Path
) -> None:
    camera = RtspServer(free_port(), tmp_path).start()
    try:
        with offline.client() as c:
            payload = {
                "camera_id": "camera-entrance-east-01",
                "url": camera.url,
                "metadata": {"prompt": "Describe what is happening", "chunk_duration": 2,
                             "num_frames_per_second_or_fixed_frames_chunk": 2},
            }  # fmt: skip
            r = c.post("/v1/stream/add", json=payload)
            assert r.status_code == 200, r.text
            assert r.json() == {
                "camera_id": "camera-entrance-east-01",
                "asset_id": "camera-entrance-east-01",
                "status": "processing",
                "inference": True,
            }
            info = c.get("/v1/stream/get-stream-info").json()["stream_list"]
            assert [s["inference_active"] for s in info if s["camera_id"] == payload["camera_id"]] == [True]
            deadline = time.monotonic() + 30
            mine: list[nv.VisionLLM] = []
            while not mine and time.monotonic() < deadline:
                every = consume(broker.bootstrap, "vlm-offline-captions", 1000, timeout=3)
                mine = [
                    msg
                    for msg in (nv.VisionLLM.FromString(m.value()) for m in every)
                    if msg.sensor.id == payload["camera_id"]
                ]
            assert mine, "no caption of the auto-started stream reached Kafka"
            assert mine[0].sensor.type == "Camera" and mine[0].llm.queries[0].response.startswith(
                "The frames show"
            )
            r = c.post("/v1/stream/remove", json={"camera_id": "camera-entrance-east-01"})
            assert r.status_code == 200 and r.json()["status"] == "removed"
            r = c.post("/v1/stream/remove", json={"camera_id": "camera-entrance-east-01"})
            assert (r.status_code, r.json()["code"]) == (404, "NotFound")
    finally:
        camera.kill()


# --- the transformers backend with a tiny random LLaVA ------------------------------------------------
def test_transformers_backend_streams_tokens_from_frames(tmp_path: Path, media: dict[str, Path]) -> None:
    checkpoint = build_tiny_llava(tmp_path / "tiny-llava")
    srv = RtviServer(tmp_path / "assets", env={"MODEL_PATH": str(checkpoint)}, service="vlm").start()
    try:
        model = _model(srv)
        assert model == "tiny-llava"
        with srv.client() as c:
            fid = upload(c, media["cat_rocket"]).json()["id"]
            r = _caption(
                c, model, fid, "Describe", chunk_duration=10, max_tokens=6,
                num_frames_per_second_or_fixed_frames_chunk=3,
            )  # fmt: skip
            assert r.status_code == 200, r.text
            chunks = r.json()["chunk_responses"]
            assert len(chunks) == 2 and all(ch["frame_count"] == 3 for ch in chunks)
            # 3 frames x 16 image tokens reach the model, plus the prompt; at most max_tokens come back
            assert all(ch["input_tokens"] > 3 * 16 and 1 <= ch["output_tokens"] <= 6 for ch in chunks)
            assert all(ch["content"] for ch in chunks)
            r = _caption(c, model, fid, "Describe", max_tokens=16385)
            assert (r.status_code, r.json()["code"]) == (422, "InvalidParameters")
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello"}], stream=True, max_tokens=5
        )
        deltas = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
        assert 2 <= len(deltas) <= 5  # token by token
        # This backend cannot constrain its output: guided decoding is refused, not ignored.
        for guided in ({"guided_choice": ["Yes", "No"]}, {"guided_json": {"type": "object"}}):
            r = _chat(srv, "Hello", **guided)
            assert (r.status_code, r.json()["code"]) == (400, "BadParameters"), r.text
            assert "transformers" in r.json()["message"]
    finally:
        srv.stop()


def test_the_vllm_backend_says_what_to_install(tmp_path: Path) -> None:
    env = {"VLM_MODEL_TO_USE": "vllm", "MODEL_PATH": str(tmp_path)}
    srv = RtviServer(tmp_path / "assets", env=env, service="vlm").start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = httpx.get(srv.url + "/v1/ready", params={"detailed": True})
            if "error" in ready.json()["checks"]["model"]:
                break
            time.sleep(0.5)
        assert ready.status_code == 503
        assert "vllm" in ready.json()["checks"]["model"]["error"]
        r = httpx.get(srv.url + "/v1/health/ready")
        assert (r.status_code, r.json()["message"]) == (503, "Service is not ready.")
    finally:
        srv.stop()
