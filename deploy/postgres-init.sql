-- The VLM service's registry lives beside the embedding service's, in its own database.
CREATE DATABASE rtvi_vlm OWNER rtvi;
