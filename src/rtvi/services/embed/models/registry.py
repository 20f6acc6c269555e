"""The model settings (ModelSettings) -> the one Embedder the embed service runs.

Choice, first match wins:
  REMOTE_EMBED_ENDPOINT set                  -> remote (as the reference switches to its CE1 NIM backend)
  VLM_MODEL_TO_USE = bundled | clip | cosmos-embed1 | remote  -> that backend
  VLM_MODEL_TO_USE = custom / "" and MODEL_PATH empty or `bundled`  -> bundled (the offline default)
  VLM_MODEL_TO_USE = custom / "" and MODEL_PATH set    -> detected from the checkpoint's config.json
Backends are imported only when chosen, so the remote one never pays for torch/transformers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from rtvi.core.models.common import read_json
from rtvi.core.models.source import ResolvedModel, resolve_model_path
from rtvi.errors import ModelLoadError
from rtvi.services.embed.models.base import Embedder
from rtvi.settings import ModelSettings

__all__ = ["EMBEDDER_KINDS", "detect_embedder_kind", "load_embedder"]

log = logging.getLogger(__name__)

EMBEDDER_KINDS: Final = ("bundled", "clip", "cosmos-embed1", "remote")
_CLIP_TYPES: Final = frozenset({"clip", "siglip", "siglip2"})


def load_embedder(settings: ModelSettings) -> Embedder:
    if settings.remote_embed_endpoint.strip():
        return _load_remote(settings)
    kind = settings.model_to_use.strip().lower()
    if kind in ("", "custom"):
        if settings.uses_bundled_model:
            return _load_bundled(settings)
        resolved = resolve_model_path(settings)
        return _load_local(detect_embedder_kind(resolved.path), resolved, settings)
    if kind == "bundled":
        return _load_bundled(settings)
    if kind == "remote":
        raise ModelLoadError("VLM_MODEL_TO_USE=remote needs REMOTE_EMBED_ENDPOINT")
    if kind in ("clip", "cosmos-embed1"):
        if settings.uses_bundled_model:
            raise ModelLoadError(
                f"VLM_MODEL_TO_USE={kind} needs MODEL_PATH (a local dir, git:<url> or ngc:<spec>)"
            )
        return _load_local(kind, resolve_model_path(settings), settings)
    raise ModelLoadError(
        f"VLM_MODEL_TO_USE={settings.model_to_use!r} is not an embedder; "
        f"use custom, {', '.join(EMBEDDER_KINDS)}"
    )


def detect_embedder_kind(model_dir: Path) -> str:
    """clip or cosmos-embed1, from the checkpoint's config.json."""
    config = read_json(model_dir / "config.json")
    if not config:
        raise ModelLoadError(f"{model_dir} has no config.json, so its model kind cannot be detected")
    model_type = str(config.get("model_type", "")).lower()
    if model_type in _CLIP_TYPES:
        return "clip"
    names = " ".join([model_type, *map(str, config.get("architectures") or [])]).lower()
    if config.get("auto_map") or "cosmos" in names or "embed1" in names:
        return "cosmos-embed1"
    raise ModelLoadError(
        f"{model_dir} holds a {model_type or 'unknown'!r} model; supported: CLIP/SigLIP checkpoints "
        "(model_type clip, siglip, siglip2) and Cosmos-Embed1 (remote-code checkpoints), or leave MODEL_PATH "
        "empty for the bundled model, or set REMOTE_EMBED_ENDPOINT"
    )


def _model_id(resolved: ResolvedModel) -> str:
    # Spec §5.3: the lowercased directory name; for a fetched model, the name it was fetched by
    # (a hub snapshot dir is a commit hash) - "cosmos-embed1-448p" for the reference default.
    return resolved.name.lower()


def _load_local(kind: str, resolved: ResolvedModel, settings: ModelSettings) -> Embedder:
    log.info("loading %s embedder from %s (%s)", kind, resolved.path, resolved.source)
    if kind == "clip":
        from rtvi.services.embed.models.clip import ClipEmbedder

        return ClipEmbedder(resolved.path, device=settings.device, model_id=_model_id(resolved))
    from rtvi.services.embed.models.cosmos import CosmosEmbed1Embedder

    return CosmosEmbed1Embedder(
        resolved.path,
        device=settings.device,
        # Unset: allowed, as the reference always runs Cosmos-Embed1's own code (settings.py says why).
        trust_remote_code=settings.trust_remote_code is not False,
        model_id=_model_id(resolved),
    )


def _load_bundled(settings: ModelSettings) -> Embedder:
    from rtvi.core.models.bundled import load_bundled

    return load_bundled(settings)


def _load_remote(settings: ModelSettings) -> Embedder:
    from rtvi.services.embed.models.remote import RemoteEmbedder

    return RemoteEmbedder(
        settings.remote_embed_endpoint,
        model_name=settings.remote_embed_model_name,
        api_key=settings.remote_embed_api_key or settings.nvidia_api_key,
        timeout_s=settings.remote_embed_timeout_s,
        batch_size=settings.remote_embed_batch_size,
    )
