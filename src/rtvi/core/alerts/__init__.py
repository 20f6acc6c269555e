"""Text alert rules on the embedding stream (docs/alerts.md): rules (what to watch for, where to tell),
their store, the calibration that decides when a score stands out, the optional VLM check, and the
deliveries (webhook, MQTT, Kafka)."""
