"""MODEL_PATH -> a local checkpoint directory.

Accepted forms (spec §8):
  /a/local/dir                          used in place; must exist
  bundled (or empty)                    the model that ships with rtvi (handled by the services' registries)
  git:https://huggingface.co/<org>/<name>   huggingface_hub snapshot into the cache (honours HF_HUB_OFFLINE);
                                        a token in the URL (https://user:<token>@huggingface.co/...) is
                                        used as HF_TOKEN for that download, never logged
  git:<any other git URL, incl. file://>     `git clone --depth 1` into the cache, reused once cloned
  ngc:<org>[/<team>][/models]/<model>:<version>  the `ngc` CLI downloads into the cache; the
                                        registry path's "models" segment (seed: ngc:nvidia/tao/models/
                                        cosmos-embed1:v1.0) is dropped, as the CLI wants org/team/model
Everything fetched lands under settings.model_cache_dir, at paths built only from sanitised names.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rtvi.core.credentials import redact_secret
from rtvi.errors import ModelLoadError
from rtvi.settings import ModelSettings

_HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
_GIT_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")  # user@host:path
_NGC_SPEC = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*){1,2}:[A-Za-z0-9][A-Za-z0-9._-]*$"
)
_HF_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_CLONE_TIMEOUT_S = 3600
_DONE_MARKER = ".rtvi-download-complete"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    path: Path  # the checkpoint directory
    name: str  # the model's own name (dir / repo / NGC model), the basis of its id
    source: str  # "local" | "huggingface" | "git" | "ngc"


def resolve_model_path(settings: ModelSettings) -> ResolvedModel:
    spec = settings.model_path.strip()
    if not spec:
        raise ModelLoadError("MODEL_PATH is empty")
    if spec.startswith("git:"):
        return _resolve_git(spec[len("git:") :].strip(), settings)
    if spec.startswith("ngc:"):
        return _resolve_ngc(spec[len("ngc:") :].strip(), settings)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"MODEL_PATH={spec!r}: no such directory (use a local dir, git:<url> or ngc:<spec>)"
        )
    return ResolvedModel(path=path.resolve(), name=path.resolve().name, source="local")


def safe_name(raw: str, max_len: int = 80) -> str:
    """A single path component derived from untrusted text: no separators, no leading dots, bounded,
    with a short hash so that different inputs never collide after the character clean-up."""
    cleaned = _UNSAFE_CHARS.sub("_", raw).strip("._-")[:max_len] or "model"
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{cleaned}-{digest}"


def _cache_subdir(settings: ModelSettings, kind: str, raw: str) -> Path:
    root = (Path(settings.model_cache_dir).expanduser() / kind).resolve()
    dest = (root / safe_name(raw)).resolve()
    if dest.parent != root:  # belt and braces: safe_name cannot produce this
        raise ModelLoadError(f"refusing cache path {dest} outside {root}")
    return dest


# --- git: ----------------------------------------------------------------------------------------
def _resolve_git(url: str, settings: ModelSettings) -> ResolvedModel:
    if not url or url.startswith("-"):
        raise ModelLoadError(f"MODEL_PATH=git:{url!r} is not a git URL")
    parsed = urlparse(url)
    if parsed.scheme in ("https", "http") and (parsed.hostname or "").lower() in _HF_HOSTS:
        return _resolve_huggingface(parsed.path, hf_token_of(url, settings), settings)
    # Only plain transports: git's ext:: / fd:: helpers would run commands taken from the URL.
    local_repo = parsed.scheme == "" and url.startswith("/")
    if parsed.scheme not in _GIT_SCHEMES and not _SCP_LIKE.match(url) and not local_repo:
        raise ModelLoadError(
            f"MODEL_PATH=git:{redact_secret(url)}: unsupported URL (use https://, ssh://, git://, file://)"
        )
    repo_name = _strip_git_suffix(Path(parsed.path or url).name) or "model"
    shown = redact_secret(url)  # for messages and the cache name: never a token in a log line or a dir name
    dest = _cache_subdir(settings, "git", shown)
    if (dest / ".git").is_dir():
        _check_no_lfs_pointers(dest, shown)
        return ResolvedModel(path=dest, name=repo_name, source="git")
    git = shutil.which("git")
    if git is None:
        raise ModelLoadError(f"MODEL_PATH=git:{shown} needs the git command, which is not installed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Clone next to the target and rename: an interrupted clone never looks like a finished one.
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=dest.parent))
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # fail instead of waiting for a password
    try:
        subprocess.run(
            [git, "clone", "--depth", "1", "--quiet", "--", url, str(tmp / "repo")],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=_CLONE_TIMEOUT_S,
        )
        if shown != url:  # the clone's .git/config would keep the token in the cache: drop the remote
            subprocess.run([git, "-C", str(tmp / "repo"), "remote", "remove", "origin"], check=True, env=env)
        os.replace(tmp / "repo", dest)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.strip()[-500:].replace(url, shown)
        raise ModelLoadError(f"git clone {shown} failed: {detail}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"git clone {shown} took longer than {_CLONE_TIMEOUT_S} s") from exc
    except OSError as exc:
        if not (dest / ".git").is_dir():  # a concurrent loader may have won the rename
            raise ModelLoadError(f"cannot place the clone of {shown} at {dest}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _check_no_lfs_pointers(dest, shown)
    return ResolvedModel(path=dest, name=repo_name, source="git")


def hf_token_of(url: str, settings: ModelSettings) -> str | None:
    """The token for a Hugging Face URL: the one inside it (seed 002: git:https://user:<token>@huggingface.co
    /org/name, for when HF_TOKEN is not set), else HF_TOKEN."""
    parsed = urlparse(url)
    return parsed.password or settings.hf_token or None


def _check_no_lfs_pointers(repo: Path, url: str) -> None:
    """Weights left as Git LFS pointer files (git-lfs missing at clone time) would fail later with an
    obscure deserialisation error; name the cause instead."""
    for path in repo.rglob("*"):
        if ".git" in path.relative_to(repo).parts or not path.is_file() or path.stat().st_size > 1024:
            continue
        if path.suffix in {".safetensors", ".bin", ".pt", ".pth", ".onnx"}:
            with path.open("rb") as fh:
                if fh.read(40).startswith(b"version https://git-lfs"):
                    raise ModelLoadError(
                        f"{url}: {path.name} is a Git LFS pointer; install git-lfs, delete {repo} and retry"
                    )


def _strip_git_suffix(name: str) -> str:
    return name[:-4] if name.endswith(".git") else name


def _hf_offline() -> bool:
    # Read at call time (huggingface_hub reads it once, at import) so a service configured after
    # import still never reaches for the network.
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or flag in {"1", "true", "yes", "on"}


def _resolve_huggingface(url_path: str, token: str | None, settings: ModelSettings) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    parts = [p for p in url_path.strip("/").split("/") if p]
    if len(parts) < 2 or not all(_HF_REPO_PART.match(p) for p in parts[:2]):
        raise ModelLoadError(f"cannot read a Hugging Face repo id (org/name) from {url_path!r}")
    repo_id = f"{parts[0]}/{_strip_git_suffix(parts[1])}"
    cache = (Path(settings.model_cache_dir).expanduser() / "huggingface").resolve()
    offline = _hf_offline()
    try:
        path = snapshot_download(
            repo_id,
            cache_dir=cache,
            token=token,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the cache"
            if offline
            else "the Hugging Face hub cannot be reached and it is not in the cache"
        )
        raise ModelLoadError(
            f"model {repo_id} is not available: {hint} ({cache}). Download it on a connected machine, or set "
            "MODEL_PATH to a local directory; leave MODEL_PATH empty for the bundled offline model"
        ) from exc
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise ModelLoadError(
            f"cannot access {repo_id} on Hugging Face (set HF_TOKEN for gated repos): {exc}"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(f"downloading {repo_id} from Hugging Face failed: {exc}") from exc
    return ResolvedModel(path=Path(path), name=_strip_git_suffix(parts[1]), source="huggingface")


# --- ngc: ----------------------------------------------------------------------------------------
def ngc_cli_spec(spec: str) -> str:
    """The NGC CLI's org[/team]/model:version for a MODEL_PATH=ngc: value; the registry's web path form
    (org/team/models/model:version, as in seed 001) loses its "models" segment."""
    parts = spec.split("/")
    if len(parts) in (3, 4) and parts[-2] == "models":
        spec = "/".join(parts[:-2] + parts[-1:])
    if not _NGC_SPEC.match(spec):
        raise ModelLoadError(
            f"MODEL_PATH=ngc:{spec}: expected ngc:<org>[/<team>]/<model>:<version> "
            "(e.g. ngc:nim/nvidia/cosmos-reason2-8b:hf-0303 or ngc:nvidia/tao/models/cosmos-embed1:v1.0)"
        )
    return spec


def _resolve_ngc(spec: str, settings: ModelSettings) -> ResolvedModel:
    spec = ngc_cli_spec(spec)
    model_name = spec.rsplit("/", 1)[-1].split(":", 1)[0]
    dest = _cache_subdir(settings, "ngc", spec)
    if (dest / _DONE_MARKER).is_file():
        return ResolvedModel(path=_checkpoint_dir(dest), name=model_name, source="ngc")
    ngc = shutil.which("ngc")
    if ngc is None:
        raise ModelLoadError(
            f"MODEL_PATH=ngc:{spec} needs the NGC CLI (`ngc`, "
            "from https://org.ngc.nvidia.com/setup/installers/cli) on PATH and an API key in NGC_API_KEY; "
            "alternatively download the model yourself and set MODEL_PATH to its directory"
        )
    if not settings.ngc_api_key:
        raise ModelLoadError(f"MODEL_PATH=ngc:{spec} needs NGC_API_KEY (or NVIDIA_API_KEY)")
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NGC_CLI_API_KEY": settings.ngc_api_key}
    try:
        subprocess.run(
            [ngc, "registry", "model", "download-version", spec, "--dest", str(dest)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=_CLONE_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()[-500:]
        raise ModelLoadError(f"ngc download of {spec} failed: {detail}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"ngc download of {spec} took longer than {_CLONE_TIMEOUT_S} s") from exc
    (dest / _DONE_MARKER).touch()
    return ResolvedModel(path=_checkpoint_dir(dest), name=model_name, source="ngc")


def _checkpoint_dir(root: Path) -> Path:
    """The ngc CLI writes into <dest>/<model>_v<version>/; take the shallowest dir with a config.json."""
    for depth in range(3):
        pattern = "/".join(["*"] * depth + ["config.json"])
        found = sorted(root.glob(pattern))
        if found:
            return found[0].parent
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    return subdirs[0] if len(subdirs) == 1 else root
