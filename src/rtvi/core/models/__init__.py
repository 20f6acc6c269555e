"""Where models come from (MODEL_PATH sources) and where they run (device selection); the model
stages themselves belong to the services."""
