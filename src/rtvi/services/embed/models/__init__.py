"""Embedder backends: bundled (offline label bridge), clip, cosmos-embed1, remote. Load them through
`rtvi.services.embed.models.registry.load_embedder`, which imports only the backend it needs."""
