"""The shared core: assets, media, pipeline, message bus, models and telemetry. Imports no web layer
and no service."""
