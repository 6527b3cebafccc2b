"""The LM layer's tiny builders, which every LM zoo (arith, agents, finedetail) builds its models and
tokenizers with: the zoo specials and left padding, `<s>` prepended by the word-level tokenizer
only, and a Llama sized by the caller over the tokenizer's vocabulary."""

from __future__ import annotations

import torch
from tokenizers import decoders, models, pre_tokenizers

from unified_opd.domains.lm.tiny import SPECIALS, fast_tokenizer, tiny_llama, tiny_llama_config, word_level_tokenizer

VOCAB = {t: i for i, t in enumerate(SPECIALS + ["a", "b", "c"])}


def test_word_level_tokenizer_prepends_bos_maps_unknown_words_and_pads_left():
    tok = word_level_tokenizer(VOCAB, pre_tokenizers.WhitespaceSplit())
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok("a c zz")["input_ids"] == [1, 4, 6, 3]
    batch = tok(["a", "a b c"], padding=True)["input_ids"]
    assert batch[0] == [0, 0, 1, 4]  # left padding: the prompts end where generation starts


def test_word_level_tokenizer_decoder_and_extra_specials():
    chars = word_level_tokenizer(VOCAB, pre_tokenizers.Split("", behavior="isolated"), decoders.Fuse())
    assert chars.decode(chars("abc")["input_ids"], skip_special_tokens=True) == "abc"  # Fuse: no spaces between
    spaced = word_level_tokenizer(
        {**VOCAB, "<image>": len(VOCAB)}, pre_tokenizers.WhitespaceSplit(), extra_special_tokens={"image_token": "<image>"}
    )
    assert spaced.image_token == "<image>" and spaced.convert_tokens_to_ids("<image>") == len(VOCAB)


def test_fast_tokenizer_adds_no_bos_unless_asked():
    pieces = models.WordPiece(vocab=VOCAB, unk_token="<unk>", continuing_subword_prefix="")
    tok = fast_tokenizer(pieces, pre_tokenizers.WhitespaceSplit())
    assert tok("ab c")["input_ids"] == [4, 5, 6]
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"


def test_tiny_llama_is_sized_by_the_caller_over_the_tokenizer_vocabulary():
    tok = word_level_tokenizer(VOCAB, pre_tokenizers.WhitespaceSplit())
    torch.manual_seed(0)
    lm = tiny_llama(tok, hidden=16, layers=2, heads=2, context=32)
    cfg = lm.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (len(VOCAB), 16, 48, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.max_position_embeddings) == (2, 2, 32)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 0)
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight  # tied
    torch.manual_seed(0)
    again = tiny_llama(tok, hidden=16, layers=2, heads=2, context=32)
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), again.state_dict().values()))


def test_tiny_llama_config_passes_extra_options_through():
    tok = word_level_tokenizer(VOCAB, pre_tokenizers.WhitespaceSplit())
    cfg = tiny_llama_config(tok, 8, 1, 2, 16, ffn_ratio=2, initializer_range=0.5)
    assert cfg.intermediate_size == 16 and cfg.initializer_range == 0.5 and not cfg.tie_word_embeddings
