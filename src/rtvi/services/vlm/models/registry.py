"""Which VLM backend serves (spec §8), from VLM_MODEL_TO_USE, VIA_VLM_ENDPOINT and MODEL_PATH:

| VLM_MODEL_TO_USE                 | backend                                                          |
|----------------------------------|------------------------------------------------------------------|
| custom / empty (the default)     | openai-compat when VIA_VLM_ENDPOINT is set, else transformers    |
|                                  | when MODEL_PATH is set, else the offline label model             |
| openai-compat                    | the OpenAI-compatible endpoint VIA_VLM_ENDPOINT (OpenAI's own    |
|                                  | API when only OPENAI_API_KEY is set, as seed 002's GPT-4o sample)|
| vllm-compatible                  | VIA_VLM_ENDPOINT when set; else the local checkpoint MODEL_PATH  |
|                                  | (the reference runs it in its vLLM; here in transformers)        |
| transformers, cosmos-reason1/2/3 | the local checkpoint MODEL_PATH (dir, git: or ngc:)              |
| vllm                             | vLLM in-process on MODEL_PATH (needs the vllm package and a GPU) |
| offline                          | the offline label model (not a language model)                   |
MODEL_PATH=bundled means "no checkpoint" (the offline label model unless an endpoint is configured).
"""

from __future__ import annotations

import importlib.util
import logging

from rtvi.core.models.source import resolve_model_path
from rtvi.errors import ModelLoadError
from rtvi.services.vlm.models.base import VisionLanguageModel
from rtvi.settings import ModelSettings

log = logging.getLogger(__name__)
ENDPOINT_KINDS = ("openai-compat", "vllm-compatible")
OPENAI_API_URL = "https://api.openai.com/v1"  # the openai client's own default endpoint
LOCAL_KINDS = ("transformers", "cosmos-reason1", "cosmos-reason2", "cosmos-reason3")
KINDS = ("custom", *ENDPOINT_KINDS, *LOCAL_KINDS, "vllm", "offline")
ENDPOINT_CONCURRENCY = 10  # the reference's NUM_VLM_PROCS for openai-compat


def load_vlm(settings: ModelSettings) -> VisionLanguageModel:
    kind = settings.model_to_use.strip().lower()
    has_checkpoint = not settings.uses_bundled_model
    if kind in ("", "custom"):
        if settings.vlm_endpoint.strip():
            kind = "openai-compat"
        elif has_checkpoint:
            kind = "transformers"
        else:
            kind = "offline"
    if kind == "vllm-compatible" and not settings.vlm_endpoint.strip() and has_checkpoint:
        # Seed 002's Qwen3-VL / Nemotron samples: a local checkpoint the reference serves with its vLLM.
        log.info(
            "VLM_MODEL_TO_USE=vllm-compatible with MODEL_PATH: serving the checkpoint with transformers; "
            "for vLLM's speed run `vllm serve` on it and set VIA_VLM_ENDPOINT"
        )
        kind = "transformers"
    if kind in ENDPOINT_KINDS:
        return _load_endpoint(settings)
    if kind == "offline":
        return _load_offline(settings)
    if kind in LOCAL_KINDS or kind == "vllm":
        if not has_checkpoint:
            raise ModelLoadError(
                f"VLM_MODEL_TO_USE={kind} needs MODEL_PATH (a local dir, git:<url> or ngc:<spec>)"
            )
        if kind == "vllm":
            raise _vllm_unavailable()
        return _load_transformers(settings)
    raise ModelLoadError(
        f"VLM_MODEL_TO_USE={settings.model_to_use!r} is not a VLM backend; use {', '.join(KINDS)}"
    )


def _load_endpoint(settings: ModelSettings) -> VisionLanguageModel:
    from rtvi.services.vlm.models.openai_compat import OpenAICompatVLM

    endpoint = settings.vlm_endpoint.strip()
    if not endpoint and settings.endpoint_api_key:
        endpoint = OPENAI_API_URL
    if not endpoint:
        raise ModelLoadError(
            f"VLM_MODEL_TO_USE={settings.model_to_use.strip()} needs VIA_VLM_ENDPOINT "
            "(e.g. http://host:8000/v1), or OPENAI_API_KEY for OpenAI's own API"
        )
    return OpenAICompatVLM.connect(
        endpoint,
        api_key=settings.endpoint_api_key,
        model=settings.vlm_endpoint_model.strip(),
        timeout_s=settings.vlm_endpoint_timeout_s,
        max_retries=settings.vlm_endpoint_max_retries,
        concurrency=settings.vlm_concurrency or ENDPOINT_CONCURRENCY,
    )


def _load_offline(settings: ModelSettings) -> VisionLanguageModel:
    from rtvi.core.models.bundled import load_bundled
    from rtvi.services.vlm.models.offline import OfflineLabelModel

    log.info("no VLM configured: serving the offline label model (not a language model)")
    return OfflineLabelModel(load_bundled(settings))


def _load_transformers(settings: ModelSettings) -> VisionLanguageModel:
    from rtvi.services.vlm.models.local import TransformersVLM

    resolved = resolve_model_path(settings)
    try:
        return TransformersVLM(
            resolved.path,
            model_id=resolved.name.lower(),
            device=settings.device,
            trust_remote_code=bool(settings.trust_remote_code),  # unset: refused, as the reference's default
        )
    except ModelLoadError as exc:
        if settings.trust_remote_code or "trust_remote_code" not in str(exc):
            raise
        raise ModelLoadError(
            f"{resolved.name} ships its own Python code, which runs only with VLM_TRUST_REMOTE_CODE=true "
            "(false by default, as in the reference)"
        ) from exc


def _vllm_unavailable() -> ModelLoadError:
    """Why VLM_MODEL_TO_USE=vllm cannot load: no vllm package, or (with it) no in-process engine yet."""
    if importlib.util.find_spec("vllm") is None:
        return ModelLoadError(
            "VLM_MODEL_TO_USE=vllm needs the vllm package on a CUDA machine (pip install vllm); without it, "
            "run a vLLM server and set VIA_VLM_ENDPOINT, or use VLM_MODEL_TO_USE=transformers"
        )
    return ModelLoadError(
        "the in-process vLLM engine is not built yet: run `vllm serve MODEL` and set "
        "VIA_VLM_ENDPOINT=http://HOST:PORT/v1 (the openai-compat backend), "
        "or use VLM_MODEL_TO_USE=transformers"
    )
