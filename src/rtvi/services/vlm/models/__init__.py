"""The vision-language model backends (see base.VisionLanguageModel and registry.load_vlm)."""
