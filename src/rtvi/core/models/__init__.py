"""Model layer: protocols, the backend registry and the backends themselves."""
