"""rtvi: real-time video intelligence services (RTVI v1 API)."""

__version__ = "0.1.0"
# The NVIDIA VSS Real-Time Embedding / VLM release whose API rtvi serves: what /v1/version.release,
# /v1/metadata.version and /v1/manifest.version report, as reference clients read them.
REFERENCE_RELEASE = "3.2.0"
