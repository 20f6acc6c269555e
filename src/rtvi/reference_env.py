"""The reference's environment variables that have no effect in rtvi, and why (docs/compatibility.md).

A team moving from NVIDIA's RT-Embed / RT-VLM 3.2 keeps its compose file and .env. Every variable those
set is either read by Settings (same name or mapped), read by a library we use (OTEL_*), or listed here.
At start-up the ones set to something other than the reference's own default are named in one warning:
a value the reference ships by default asks for nothing, so it is not worth a line in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NoEffect:
    reason: str
    defaults: frozenset[str] = frozenset()  # the reference's default values (lower case): no warning


def _no_effect(reason: str, *defaults: str) -> NoEffect:
    return NoEffect(reason, frozenset(d.lower() for d in defaults))


_NO_VLLM = "no in-process vLLM engine here: set it on the vLLM server behind VIA_VLM_ENDPOINT"
_NO_GSTREAMER = (
    "no GStreamer/DeepStream pipeline: RTSP is read by FFmpeg (RTVI_RTSP_TRANSPORT, RTVI_RTSP_TIMEOUT)"
)
_NO_EVS = (
    "Efficient Video Sampling is a patch of the reference's vLLM; rtvi sends the sampled frames as they are"
)
_NO_TRT = "no TensorRT engines: cosmos-embed1 runs in PyTorch"
_ONE_DEVICE = "one process uses one device (RTVI_DEVICE=cuda:N); run one replica per GPU (docs/scale-out.md)"
_NO_TIMESTAMP_PROMPT = (
    "chunk times are not written into prompts; they are in every chunk response and message"
)
_NO_PROFILER = "use traces (ENABLE_OTEL_MONITORING) and /v1/metrics"

NO_EFFECT: Mapping[str, NoEffect] = {
    # model loading
    "MODEL_IMPLEMENTATION_PATH": _no_effect(
        "rtvi runs its own backends (VLM_MODEL_TO_USE); model implementation code from a path is not run",
        "",
        "/opt/nvidia/rtvi/rtvi/models/custom/samples/cosmos-embed1",
    ),
    "MODEL_REPOSITORY_SCRIPT_PATH": _no_effect(
        "no Triton model repository is built",
        "",
        "/opt/nvidia/rtvi/rtvi/models/custom/samples/cosmos-embed1/create_triton_model_repo.py",
    ),
    "RTVI_ENFORCE_MODEL_PATH_ALLOWLIST": _no_effect(
        "MODEL_PATH is operator configuration, never request input; no allowlist is applied", "false"
    ),
    "RTVI_MODEL_PATH_ALLOWLIST": _no_effect("MODEL_PATH is operator configuration; no allowlist is applied"),
    "COSMOS_EMBED1_TRT_PRECISION": _no_effect(_NO_TRT, "fp16"),
    "COSMOS_EMBED1_TRT_EXTRA_ARGS": _no_effect(_NO_TRT),
    "DISABLE_OPTIMIZATION": _no_effect("cosmos-embed1 always runs the PyTorch path", "false"),
    "NUM_GPUS": _no_effect(_ONE_DEVICE),
    "VSS_NUM_GPUS_PER_VLM_PROC": _no_effect(_ONE_DEVICE),
    "OPENAI_API_VERSION": _no_effect(
        "Azure OpenAI's API versions are not supported; point VIA_VLM_ENDPOINT at an OpenAI-compatible URL"
    ),
    "RTVI_QWEN_REFERENCE_RESIZE": _no_effect(
        "frames are resized once, to VLM_INPUT_WIDTH x VLM_INPUT_HEIGHT when set", "false"
    ),
    "VLM_VIDEO_PRUNING_RATE": _no_effect(_NO_EVS),
    "VIA_EVS_SESSION": _no_effect(_NO_EVS),
    "VIA_EVS_TOKEN_BUDGET": _no_effect(_NO_EVS),
    "VIA_EVS_MAX_SESSIONS": _no_effect(_NO_EVS),
    "VLLM_EVS_SIMILARITY_THRESHOLD": _no_effect(_NO_EVS),
    "RTVI_VLLM_ADAPTIVE_PREPROCESS": _no_effect(_NO_VLLM, "disabled"),
    "ENABLE_DENSE_CAPTION": _no_effect("every chunk is captioned; there is no separate dense-caption mode"),
    "VLM_USE_FPS_FOR_CHUNKING": _no_effect(
        "set use_fps_for_chunking per request; the service default is a fixed frame count"
    ),
    "ENABLE_AUDIO": _no_effect("audio is asked for per request (enable_audio) on the VLM service", "false"),
    # decoding and RTSP
    "INSTALL_PROPRIETARY_CODECS": _no_effect(
        "PyAV's FFmpeg already carries the codecs it decodes; nothing is installed at start-up", "false"
    ),
    "RTVI_RTSP_LATENCY": _no_effect(_NO_GSTREAMER, "2000"),
    "RTVI_RTPJITTERBUFFER_DROP_ON_LATENCY": _no_effect(_NO_GSTREAMER, "false"),
    "RTVI_RTPJITTERBUFFER_FASTSTART_MIN_PACKETS": _no_effect(_NO_GSTREAMER, "2"),
    "GST_ENABLE_CUSTOM_PARSER_MODIFICATIONS": _no_effect(_NO_GSTREAMER, "1"),
    "RTVI_ENABLE_LIVE_TIMESTAMP_FILTER": _no_effect(
        "no DeepStream timestamp filter: live chunk times come from the camera's RTCP clock or arrival",
        "false",
    ),
    "RTVI_ENABLE_FILE_TIMESTAMP_FILTER": _no_effect(
        "no DeepStream timestamp filter: file chunk times are the frames' PTS", "true"
    ),
    "RTVI_ENABLE_GOP_DECODE_OPT": _no_effect(
        "file sampling always skips GOPs that hold no sampled frame (docs/media.md)", "true"
    ),
    "DISABLE_DECODER_REUSE": _no_effect("a live stream's one decoder is shared by all its jobs", "auto"),
    "RTVI_IPC_FRAME_COPY": _no_effect("no IPC frame sockets", "false"),
    "RTVI_IPC_SOCKET_HOST_DIR": _no_effect("no IPC frame sockets"),
    "RTVI_DISABLE_LIVESTREAM_PREVIEW": _no_effect("no live preview output", "true"),
    "SKIP_PIPELINE_WARMUP": _no_effect("there is no warm-up pass to skip", "0"),
    "REMOTE_VIDEO_INPUT": _no_effect("a remote VLM endpoint always receives the sampled frames", "true"),
    # GPU memory and admission
    "RTVI_EMPTY_CUDA_CACHE_ON_RESULT": _no_effect("torch's caching allocator is left alone", "false"),
    "RTVI_LIVE_STREAM_GPU_MEMORY_GUARD": _no_effect(
        "live work is bounded by queues (RTVI_LIVE_PENDING_CHUNKS), not by a GPU memory guard", "true"
    ),
    "RTVI_LIVE_STREAM_GPU_MEMORY_HEADROOM_MB": _no_effect("no GPU memory guard", "1024"),
    "RTVI_VLM_ADMISSION_MODE": _no_effect(
        "requests are batched (VLM_BATCH_SIZE) and bounded by queues, not admitted by cost", "off"
    ),
    "RTVI_VLM_ADMISSION_MAX_ACTIVE_COST": _no_effect("no cost-based admission", "0"),
    # prompts
    "RTVI_ADD_TIMESTAMP_TO_VLM_PROMPT": _no_effect(_NO_TIMESTAMP_PROMPT),
    "RTVI_TIMESTAMP_PROMPT_PREFIX_FILE_SOURCE": _no_effect(_NO_TIMESTAMP_PROMPT),
    "RTVI_TIMESTAMP_PROMPT_SUFFIX_FILE_SOURCE": _no_effect(_NO_TIMESTAMP_PROMPT),
    "RTVI_TIMESTAMP_PROMPT_PREFIX_RTSP_SOURCE": _no_effect(_NO_TIMESTAMP_PROMPT),
    "RTVI_TIMESTAMP_PROMPT_SUFFIX_RTSP_SOURCE": _no_effect(_NO_TIMESTAMP_PROMPT),
    "RTVI_VIDEO_METADATA_ABSOLUTE_TIMESTAMPS": _no_effect(_NO_TIMESTAMP_PROMPT, "false"),
    "RTVI_ALLOWED_LOCAL_MEDIA_PATHS": _no_effect(
        "local media for chat is allowed by FILE_URL_ALLOWED_DIRS, as for every file:// URL",
        "/opt/nvidia/rtvi/streams/perf",
    ),
    # process options
    "RTVI_EXTRA_ARGS": _no_effect("there is no reference command line to extend; every option is a variable"),
    "ENABLE_REQUEST_PROFILING": _no_effect(_NO_PROFILER, "false"),
    "ENABLE_NSYS_PROFILER": _no_effect(_NO_PROFILER, "false"),
    "KAFKA_LOG4J_ROOT_LOGLEVEL": _no_effect(
        "a setting of the Kafka broker's container, not of this service", "error"
    ),
    # vLLM engine tunables (the reference compose's defaults are not worth a warning)
    "VLLM_GPU_MEMORY_UTILIZATION": _no_effect(_NO_VLLM),
    "VLLM_MAX_NUM_SEQS": _no_effect(_NO_VLLM, "1024"),
    "VLLM_MAX_NUM_BATCHED_TOKENS": _no_effect(_NO_VLLM, "16384"),
    "VLLM_NUM_PREPROCESS_WORKERS": _no_effect(_NO_VLLM, "16"),
    "VLLM_IGNORE_EOS": _no_effect(_NO_VLLM, "false"),
    "VLLM_HAS_FLASHINFER_CUBIN": _no_effect(_NO_VLLM, "1"),
    "VLLM_MM_PROCESSOR_VIDEO_NUM_FRAMES": _no_effect(_NO_VLLM, "256"),
    "VLLM_NUM_SCHEDULER_STEPS": _no_effect(_NO_VLLM, "8"),
    "VLLM_ENABLE_PREFIX_CACHING": _no_effect(_NO_VLLM, "false"),
    "VLLM_DISABLE_MM_PREPROCESSOR_CACHE": _no_effect(_NO_VLLM, "true"),
    "VLLM_MM_PROCESSOR_CACHE_GB": _no_effect(_NO_VLLM, "0", "1"),
    "VLLM_MM_TENSOR_IPC": _no_effect(_NO_VLLM),
    "VLLM_MULTIMODAL_TENSOR_IPC": _no_effect(_NO_VLLM),
    "VLLM_MM_ENCODER_ATTN_BACKEND": _no_effect(_NO_VLLM),
    "VLLM_DISABLED_KERNELS": _no_effect(_NO_VLLM, "machetelinearkernel"),
    "VLLM_ROOT": _no_effect(_NO_VLLM, "/usr/local/lib/python3.12/dist-packages/vllm"),
    "VLLM_USE_STANDALONE_COMPILE": _no_effect(_NO_VLLM, "0"),
    "VLLM_USE_AOT_COMPILE": _no_effect(_NO_VLLM, "0"),
    "VLLM_DISABLE_COMPILE_CACHE": _no_effect(_NO_VLLM, "1"),
    "VLLM_ENFORCE_EAGER": _no_effect(_NO_VLLM, "false"),
    "VLLM_CUDAGRAPH_MODE": _no_effect(_NO_VLLM),
    "VLLM_USE_NVFP4_CT_EMULATIONS": _no_effect(_NO_VLLM, "0"),
    "VLLM_MOE_BACKEND": _no_effect(_NO_VLLM),
}


def set_without_effect(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, reason) of each listed variable set to a value other than empty or the reference default."""
    found = []
    for name, entry in NO_EFFECT.items():
        value = environ.get(name, "").strip()
        if value and value.lower() not in entry.defaults:
            found.append((name, entry.reason))
    return found


def warn_without_effect(environ: Mapping[str, str]) -> list[str]:
    """One warning naming every reference variable set here to no effect; returns their names."""
    found = set_without_effect(environ)
    if found:
        log.warning(
            "these reference variables have no effect in rtvi (docs/compatibility.md): %s",
            "; ".join(f"{name}: {reason}" for name, reason in found),
        )
    return [name for name, _ in found]
