"""Tiny models and tokenizers built from code (no downloads), shared by the text, vision and agent zoos.

`tiny_llama_config` / `tiny_llama`: a small Llama sized by the caller, with the tokenizer's vocabulary
and special-token ids. `fast_tokenizer` wraps a `tokenizers` model in a `PreTrainedTokenizerFast`
with the zoo specials (`<pad> <s> </s> <unk>`, left padding); `word_level_tokenizer` is the common
case: one token per vocabulary entry and `<s>` prepended to every encoding.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from tokenizers import Tokenizer, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def tiny_llama_config(
    tok: PreTrainedTokenizerFast, hidden: int, layers: int, heads: int, context: int, ffn_ratio: int = 3, **extra: Any
) -> LlamaConfig:
    """A Llama config of `layers` × `hidden` (MLP `ffn_ratio` × wider, no grouped KV) over `tok`'s vocabulary.

    `extra` goes to `LlamaConfig` as is (e.g. `tie_word_embeddings`, `initializer_range`)."""
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * ffn_ratio,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=context,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def tiny_llama(tok: PreTrainedTokenizerFast, hidden: int, layers: int, heads: int, context: int) -> LlamaForCausalLM:
    """A freshly initialised causal LM (tied embeddings) from `tiny_llama_config`; seed torch first."""
    return LlamaForCausalLM(tiny_llama_config(tok, hidden, layers, heads, context, tie_word_embeddings=True))


def fast_tokenizer(
    model: models.Model, pre_tokenizer: Any, decoder: Any = None, prepend_bos: bool = False, **extra: Any
) -> PreTrainedTokenizerFast:
    """`model` (whose vocabulary holds SPECIALS) as a Hugging Face tokenizer with the zoo specials.

    `prepend_bos` puts `<s>` before every encoding; `extra` goes to `PreTrainedTokenizerFast`
    (e.g. `extra_special_tokens`)."""
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizer
    if decoder is not None:
        tok.decoder = decoder
    if prepend_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side="left", **extra,
    )


def word_level_tokenizer(
    vocab: Dict[str, int], pre_tokenizer: Any, decoder: Optional[Any] = None, **extra: Any
) -> PreTrainedTokenizerFast:
    """One token per `vocab` entry (anything else is `<unk>`), `<s>` prepended; see `fast_tokenizer`."""
    return fast_tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"), pre_tokenizer, decoder, prepend_bos=True, **extra)
