"""The seeds' Python examples, run as their users run them (requests + sseclient-py, in a child process)
against both services. Only what a user must change is changed: the port or base URL, the file name,
the RTSP URL, and the model id where the seed says to take it from GET /v1/models.

The VLM service runs on the reference RT-VLM compose file's environment with an empty .env (every
`${VAR:-}` arriving as ""), configured as seed 002's NIM sample: VLM_MODEL_TO_USE=openai-compat,
OPENAI_API_KEY, VIA_VLM_ENDPOINT, VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME (the endpoint is the scripted
OpenAI-compatible server: a hosted NIM cannot run here).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reference_compose import VLM_COMPOSE_ENV, compose_environment
from tests.rtsp_server import RtspServer, gst_available
from tests.scripted_vlm import MODEL as SCRIPTED_MODEL
from tests.scripted_vlm import ScriptedVlmServer
from tests.servers import RtviServer, free_port

# --- seed 001 (Real-Time Embedding) ----------------------------------------------------------------
EMBED_LIST_MODELS = """
import requests
import json

BACKEND_PORT = 8017
BASE_URL = f"http://localhost:{BACKEND_PORT}/v1"

response = requests.get(f"{BASE_URL}/models")
models = response.json()
print(f"Available models: {models['data']}")
model_id = models["data"][0]["id"]   # use in embedding requests below
"""

EMBED_VIDEO_FILE = """
import requests
import json

BACKEND_PORT = 8017
BASE_URL = f"http://localhost:{BACKEND_PORT}/v1"
model_id = requests.get(f"{BASE_URL}/models").json()["data"][0]["id"]

# Step 1: Upload a video file
with open("video.mp4", "rb") as f:
    response = requests.post(
        f"{BASE_URL}/files",
        files={"file": f},
        data={
            "purpose": "vision",
            "media_type": "video",
            "creation_time": "2024-06-09T18:32:11.123Z"
        }
    )
file_info = response.json()
file_id = file_info["id"]
print(f"Uploaded file: {file_id}")

# Step 2: Generate video embeddings
embedding_request = {
    "id": [file_id],
    "model": model_id,   # from GET /v1/models, e.g. cosmos-embed1-448p
    "chunk_duration": 10,
    "chunk_overlap_duration": 0
}
response = requests.post(
    f"{BASE_URL}/generate_video_embeddings",
    json=embedding_request
)
embeddings = response.json()
print(f"Generated embeddings for {len(embeddings['chunk_responses'])} chunks")

# Step 3: Process results
for chunk in embeddings["chunk_responses"]:
    print(f"[{chunk['start_time']} - {chunk['end_time']}]: Embedding size: {len(chunk['embeddings'])}")

# Step 4: Clean up
requests.delete(f"{BASE_URL}/files/{file_id}")
print("File deleted")
"""

EMBED_LIVE_STREAM = """
import requests
import json
import sseclient

BACKEND_PORT = 8017
BASE_URL = f"http://localhost:{BACKEND_PORT}/v1"
model_id = "cosmos-embed1-448p"   # or from GET /v1/models

# Step 1: Add live stream
stream_request = {
    "streams": [{
        "liveStreamUrl": "rtsp://example.com/stream",
        "description": "Main warehouse camera"
    }]
}
response = requests.post(
    f"{BASE_URL}/streams/add",
    json=stream_request
)
stream_info = response.json()
stream_id = stream_info["results"][0]["id"]
print(f"Added stream: {stream_id}")

# Step 2: Start embedding generation with streaming
embedding_request = {
    "id": [stream_id],
    "model": model_id,
    "stream": True,
    "chunk_duration": 10,
    "chunk_overlap_duration": 0
}
response = requests.post(
    f"{BASE_URL}/generate_video_embeddings",
    json=embedding_request,
    stream=True
)

# Step 3: Process streaming responses
client = sseclient.SSEClient(response)
for event in client.events():
    if event.data == "[DONE]":
        break
    data = json.loads(event.data)
    if "chunk_responses" in data:
        for chunk in data["chunk_responses"]:
            print(f"[{chunk['start_time']}]: Embedding size: {len(chunk['embeddings'])}")

# Step 4: Stop processing and remove stream
requests.delete(f"{BASE_URL}/generate_video_embeddings/{stream_id}")
requests.delete(f"{BASE_URL}/streams/delete/{stream_id}")
print("Stream removed")
"""

EMBED_TEXT = """
import requests
import json

BACKEND_PORT = 8017
BASE_URL = f"http://localhost:{BACKEND_PORT}/v1"
model_id = "cosmos-embed1-448p"   # or from GET /v1/models

# Generate text embeddings
text_request = {
    "text_input": [
        "A person walking in a warehouse",
        "A forklift moving pallets"
    ],
    "model": model_id
}
response = requests.post(
    f"{BASE_URL}/generate_text_embeddings",
    json=text_request
)
result = response.json()

# Process results
print(f"Model: {result['model']}")
for item in result["data"]:
    print(f"Text: {item['text_input']}")
    print(f"Embedding size: {len(item['embeddings'])}")
    print(f"First 5 values: {item['embeddings'][:5]}")
"""

# --- seed 002 (Real-Time VLM; the page lost its indentation, restored here) ----------------------------
VLM_MODEL_ID = """
import requests
response = requests.get("http://localhost:8000/v1/models")
model_id = response.json()["data"][0]["id"]
print(f"Loaded model: {model_id}") # use this as the "model" field
"""

VLM_DENSE_CAPTIONING = """
import requests
import json
BASE_URL = "http://localhost:8000/v1"
# Step 1: Upload a video file
with open("video.mp4", "rb") as f:
    response = requests.post(
        f"{BASE_URL}/files",
        files={"file": f},
        data={
            "purpose": "vision",
            "media_type": "video",
            "creation_time": "2024-06-09T18:32:11.123Z"
        }
    )
response.raise_for_status()
file_info = response.json()
file_id = file_info["id"]
print(f"Uploaded file: {file_id}")
# Step 2: Generate captions (chunks returned in full response)
caption_request = {
    "id": file_id,
    "prompt": "Describe what is happening in this video",
    "model": "cosmos-reason2",
    "chunk_duration": 60,
    "chunk_overlap_duration": 10,
    "enable_audio": False
}
response = requests.post(
    f"{BASE_URL}/generate_captions",
    json=caption_request
)
response.raise_for_status()
captions = response.json()
print(f"Generated {len(captions['chunk_responses'])} caption chunks")
# Step 3: Process results
for chunk in captions["chunk_responses"]:
    print(f"[{chunk['start_time']} - {chunk['end_time']}]: {chunk['content']}")
# Step 4: Clean up
requests.delete(f"{BASE_URL}/files/{file_id}")
print("File deleted")
"""

VLM_ALERT = """
import requests
BASE_URL = "http://localhost:8000/v1"
# Upload video or use existing stream ID
file_id = "your-file-id" # or stream_id for live streams
caption_request = {
    "id": file_id,
    "prompt": (
        "You are a warehouse monitoring system focused on safety and "
        "efficiency. Analyze the situation to detect any anomalies such as "
        "workers not wearing safety gear, leaving items unattended, or "
        "wasting time. Respond in the following structured format:\\n"
        "Anomaly Detected: Yes/No\\n"
        "Reason: [Brief explanation]"
    ),
    "system_prompt": "Answer the user's question correctly in yes or no",
    "model": "cosmos-reason2",
    "chunk_duration": 60,
    "chunk_overlap_duration": 10
}
response = requests.post(
    f"{BASE_URL}/generate_captions",
    json=caption_request
)
captions = response.json()
for chunk in captions["chunk_responses"]:
    content = chunk.get("content", "")
    if "Anomaly Detected: Yes" in content:
        print(f"ALERT [{chunk['start_time']} - {chunk['end_time']}]: {content}")
"""

VLM_CHAT_WITH_ID = """
import requests
BASE_URL = "http://localhost:8000/v1"
file_id = "your-uploaded-file-uuid" # From POST /v1/files
response = requests.post(
    f"{BASE_URL}/chat/completions",
    json={
        "model": "cosmos-reason2",
        "id": file_id,
        "messages": [{"role": "user", "content": "Describe what is happening in this video."}],
    },
)
result = response.json()
print(result["choices"][0]["message"]["content"])
"""

VLM_CHAT_WITH_DATA_URL = """
import requests
import base64
BASE_URL = "http://localhost:8000/v1"
# Read and encode image as base64
with open("image.png", "rb") as f:
    b64_data = base64.b64encode(f.read()).decode("utf-8")
data_url = f"data:image/png;base64,{b64_data}"
response = requests.post(
    f"{BASE_URL}/chat/completions",
    json={
        "model": "cosmos-reason2",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this image."},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            }
        ],
    },
)
result = response.json()
print(result["choices"][0]["message"]["content"])
"""


def run_example(code: str, cwd: Path, replace: dict[str, str], timeout: float = 240) -> list[str]:
    """Run one example as a user's script; its printed lines (fails with its output if it fails)."""
    for old, new in replace.items():
        assert old in code, f"the example no longer contains {old!r}"
        code = code.replace(old, new)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"example failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


@pytest.fixture()
def workdir(tmp_path: Path, media: dict[str, Path]) -> Path:
    """A user's folder: the example's video.mp4 and image.png."""
    (tmp_path / "video.mp4").write_bytes(media["cat_rocket"].read_bytes())
    (tmp_path / "image.png").write_bytes(media["rocket_png"].read_bytes())
    return tmp_path


# --- the embedding service -------------------------------------------------------------------------
def test_embed_seed_examples(server: RtviServer, workdir: Path, model_id: str) -> None:
    port = {"BACKEND_PORT = 8017": f"BACKEND_PORT = {server.port}"}
    listed = run_example(EMBED_LIST_MODELS, workdir, port)
    assert listed[0].startswith("Available models: [{") and model_id in listed[0]

    out = run_example(EMBED_VIDEO_FILE, workdir, port)
    file_id = out[0].removeprefix("Uploaded file: ")
    assert out[1] == "Generated embeddings for 2 chunks"  # the 20 s clip in 10 s chunks
    probe = {"text_input": ["x"], "model": model_id}
    dim = len(
        httpx.post(server.url + "/v1/generate_text_embeddings", json=probe).json()["data"][0]["embeddings"]
    )
    assert out[2:4] == [
        f"[2024-06-09T18:32:11.123Z - 2024-06-09T18:32:21.123Z]: Embedding size: {dim}",
        f"[2024-06-09T18:32:21.123Z - 2024-06-09T18:32:31.123Z]: Embedding size: {dim}",
    ]
    assert out[-1] == "File deleted"
    assert httpx.get(f"{server.url}/v1/files/{file_id}").status_code in (400, 404)  # really deleted

    text = run_example(EMBED_TEXT, workdir, {**port, '"cosmos-embed1-448p"': repr(model_id)})
    assert text[0] == f"Model: {model_id}"
    assert text[1:3] == ["Text: A person walking in a warehouse", f"Embedding size: {dim}"]
    assert text[4] == "Text: A forklift moving pallets"


@pytest.mark.skipif(not gst_available(), reason="needs Debian's gst-rtsp-server (make rtsp-deps)")
def test_embed_seed_live_stream_example(server: RtviServer, workdir: Path, model_id: str) -> None:
    """The live example reads SSE until [DONE]: it ends when the stream's generation is stopped."""
    camera = RtspServer(free_port(), workdir).start()
    code = EMBED_LIVE_STREAM
    for old, new in {
        "BACKEND_PORT = 8017": f"BACKEND_PORT = {server.port}",
        '"cosmos-embed1-448p"': repr(model_id),
        "rtsp://example.com/stream": camera.url,
        '"chunk_duration": 10': '"chunk_duration": 2',  # a user's choice: chunks every 2 s, not 10
    }.items():
        code = code.replace(old, new)
    user = subprocess.Popen(
        [sys.executable, "-u", "-c", code],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(ln.rstrip("\n") for ln in iter(user.stdout.readline, "")), daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum("Embedding size" in line for line in lines) < 2:
            time.sleep(0.2)
        assert sum("Embedding size" in line for line in lines) >= 2, lines
        stream_id = lines[0].removeprefix("Added stream: ")
        # Another client stops the generation (the example's own Step 4 runs once [DONE] arrives).
        assert httpx.delete(f"{server.url}/v1/generate_video_embeddings/{stream_id}").status_code == 200
        assert user.wait(timeout=30) == 0, lines
        reader.join(timeout=5)
        assert lines[-1] == "Stream removed"
        listed = httpx.get(server.url + "/v1/streams/get-stream-info").json()
        assert stream_id not in {s["id"] for s in listed}
    finally:
        user.kill()
        camera.kill()


# --- the VLM service, on the reference compose's environment -----------------------------------------
@pytest.fixture(scope="module")
def reference_vlm(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedVlmServer
) -> Iterator[RtviServer]:
    dotenv = {  # seed 002's "NVIDIA NIM" sample, in the user's .env; no Kafka broker on this laptop
        "VLM_MODEL_TO_USE": "openai-compat",
        "OPENAI_API_KEY": "nvapi-seed-example",
        "VIA_VLM_ENDPOINT": scripted.url,
        "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME": SCRIPTED_MODEL,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    env = compose_environment(VLM_COMPOSE_ENV, dotenv)
    srv = RtviServer(tmp_path_factory.mktemp("reference-vlm") / "assets", env=env, service="vlm").start()
    yield srv
    srv.stop()


def test_reference_vlm_compose_environment_serves(reference_vlm: RtviServer) -> None:
    """Started on the compose's environment (empty values included): ready, with one warning at most
    naming reference variables without effect (none here: the compose's defaults ask for nothing)."""
    assert httpx.get(reference_vlm.url + "/v1/ready").status_code == 200
    log = reference_vlm.log_tail(200_000)
    assert "reference variables have no effect" not in log
    assert "KAFKA_ENABLED is unset" not in log  # MESSAGE_BUS=kafka in the compose says so explicitly


def test_vlm_seed_examples(
    reference_vlm: RtviServer, scripted: ScriptedVlmServer, workdir: Path, media: dict[str, Path]
) -> None:
    base = {"http://localhost:8000/v1": reference_vlm.url + "/v1"}
    loaded = run_example(VLM_MODEL_ID, workdir, {"http://localhost:8000": reference_vlm.url})
    assert loaded == [f"Loaded model: {SCRIPTED_MODEL}"]
    model = {
        '"model": "cosmos-reason2"': f'"model": "{SCRIPTED_MODEL}"'
    }  # "replace ... with the returned id"

    dense = run_example(VLM_DENSE_CAPTIONING, workdir, {**base, **model})
    assert dense[1] == "Generated 1 caption chunks"  # 20 s in 60 s chunks
    assert dense[2].startswith("[2024-06-09T18:32:11.123Z - 2024-06-09T18:32:31.123Z]: I saw")
    assert dense[-1] == "File deleted"
    asked = scripted.requests()[-1]
    assert asked["authorization"] == "Bearer nvapi-seed-example"  # OPENAI_API_KEY reached the endpoint

    with open(media["cat_rocket"], "rb") as f:
        file_id = httpx.post(
            reference_vlm.url + "/v1/files",
            data={"purpose": "vision", "media_type": "video"},
            files={"file": ("video.mp4", f)},
        ).json()["id"]
    # The scripted endpoint answers what a prompt's SAY: asks; here the answer a VLM gives on an anomaly.
    say = {"Reason: [Brief explanation]": "Reason: [Brief explanation] SAY:Anomaly Detected: Yes"}
    alerts = run_example(VLM_ALERT, workdir, {**base, **model, **say, '"your-file-id"': repr(file_id)})
    assert alerts == ["ALERT [0.0 - 20.0]: Anomaly Detected: Yes"]
    chat = run_example(
        VLM_CHAT_WITH_ID, workdir, {**base, **model, '"your-uploaded-file-uuid"': repr(file_id)}
    )
    assert chat[0].startswith("I saw")
    described = run_example(VLM_CHAT_WITH_DATA_URL, workdir, {**base, **model})
    assert described == ["I saw 1 image(s)."]
