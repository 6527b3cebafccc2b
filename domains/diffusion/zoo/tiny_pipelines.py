"""Tiny SD3 and FLUX pipelines built from configs, offline: character-level tokenizers, small
CLIP / T5 text encoders, a small `AutoencoderKL` and a one-block transformer of the family.

They are real diffusers pipelines (`save_pretrained` / `DiffusionPipeline.from_pretrained`), so
the tests and the zoo exercise exactly the code path of SD3 / SD3.5 and FLUX checkpoints.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

LETTERS = string.ascii_lowercase + string.digits + ",."


def char_clip_tokenizer(max_length: int = 16, words: Sequence[str] = ()) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single characters (word-final ones marked `</w>`), plus merges
    that make each of `words` one token (longer words' merges rank first, so a shorter word's
    merge never splits a longer word: checked)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for w in sorted(words, key=len, reverse=True):
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            merges.append((cur, p))
            cur += p
            vocab.setdefault(cur, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), model_max_length=max_length)
    split = [w for w in words if tok.tokenize(w) != [w + "</w>"]]
    if split:
        raise ValueError(f"char_clip_tokenizer: words {split} do not tokenize to one token")
    return tok


def char_t5_tokenizer(max_length: int = 16, words: Sequence[str] = ()) -> T5TokenizerFast:
    """A T5 unigram tokenizer over single and word-initial characters, with `words` as likelier pieces."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in LETTERS] + [("▁" + c, -2.5) for c in LETTERS]
    pieces += [("▁" + w, -1.0) for w in words if len(w) > 1]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)


@dataclass(frozen=True)
class TinySizes:
    """Widths of the tiny components; `sample_size` is the latent size (pixels = 2× with the VAE)."""

    text_width: int = 16
    width: int = 16  # transformer heads × head dim
    heads: int = 2
    layers: int = 1
    sample_size: int = 8
    latent_channels: int = 4
    vae_channels: tuple = (8, 16)
    max_length: int = 16
    words: tuple = ()  # whole-word tokens of both tokenizers

    def tokenizers(self):
        return char_clip_tokenizer(self.max_length, self.words), char_t5_tokenizer(self.max_length, self.words)

    @property
    def t5_width(self) -> int:
        """T5 is as wide as the two CLIPs side by side, so SD3 pads, never truncates, their embeddings."""
        return 2 * self.text_width

    @property
    def vocab_size(self) -> int:
        return max(len(t) for t in self.tokenizers())


def clip_encoder(s: TinySizes, projection: bool, seed: int):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=s.vocab_size, hidden_size=s.text_width, intermediate_size=2 * s.text_width, num_attention_heads=2,
        num_hidden_layers=2, projection_dim=s.text_width, max_position_embeddings=s.max_length,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def t5_encoder(s: TinySizes, seed: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=s.vocab_size, d_model=s.t5_width, d_ff=2 * s.t5_width, d_kv=8,
                                   num_heads=2, num_layers=1, decoder_start_token_id=0))


def tiny_vae(s: TinySizes, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    n = len(s.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=s.vae_channels, latent_channels=s.latent_channels, norm_num_groups=4,
        sample_size=s.sample_size * 2 ** (n - 1), scaling_factor=1.5, shift_factor=0.05,
    )


def sd3_transformer(s: TinySizes, seed: int) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=s.sample_size, patch_size=2, in_channels=s.latent_channels, out_channels=s.latent_channels,
        num_layers=s.layers, attention_head_dim=s.width // s.heads, num_attention_heads=s.heads,
        joint_attention_dim=s.t5_width, caption_projection_dim=s.width, pooled_projection_dim=2 * s.text_width,
        pos_embed_max_size=s.sample_size,
    )


def tiny_sd3_pipeline(seed: int = 0, sizes: TinySizes = TinySizes(), shift: float = 3.0) -> StableDiffusion3Pipeline:
    """SD3: two CLIP encoders with projection + T5; `shift=3.0` is SD3-medium's scheduler."""
    s = sizes
    clip_tok, t5_tok = s.tokenizers()
    return StableDiffusion3Pipeline(
        transformer=sd3_transformer(s, seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=shift), vae=tiny_vae(s),
        text_encoder=clip_encoder(s, True, 101), tokenizer=clip_tok,
        text_encoder_2=clip_encoder(s, True, 102), tokenizer_2=clip_tok,
        text_encoder_3=t5_encoder(s, 103), tokenizer_3=t5_tok,
    )


def tiny_flux_pipeline(seed: int = 0, sizes: TinySizes = TinySizes(), guidance_embeds: bool = False) -> FluxPipeline:
    """FLUX: CLIP (pooled) + T5, packed 2×2 latents, a dynamically shifted scheduler."""
    s = sizes
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * s.latent_channels, num_layers=s.layers, num_single_layers=s.layers,
        attention_head_dim=s.width // s.heads, num_attention_heads=s.heads, joint_attention_dim=s.t5_width,
        pooled_projection_dim=s.text_width, guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=64,
                                                base_shift=0.5, max_shift=1.15)
    clip_tok, t5_tok = s.tokenizers()
    return FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=tiny_vae(s),
        text_encoder=clip_encoder(s, False, 101), tokenizer=clip_tok,
        text_encoder_2=t5_encoder(s, 103), tokenizer_2=t5_tok,
    )
