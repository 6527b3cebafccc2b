"""A tiny Qwen3-architecture chat model pair and chat data, built from configs (no downloads).

The tokenizer is a byte-level BPE trained with `tokenizers` on a few sentences, with ChatML
special tokens and chat template; `<|endoftext|>` is the tokenizer's EOS, and the models'
`generation_config` adds `<|im_end|>` (as Qwen's chat models do), so only reading it stops a turn.
The student's embeddings share one strong direction that its `<|im_end|>` output row points
along, so it ends a turn after a few tokens, as a chat model does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is two plus three? It is five.",
    "Name a colour of the sky. Blue, on a clear day.",
    "You are a helpful assistant. Answer briefly.",
    "How many legs has a cat? Four legs.",
] * 20


def chatml_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=CHATML
    )


def save_qwen3(path: Path, tok, seed: int, hidden: int = 32, ends_turns: bool = False) -> Path:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen3ForCausalLM(cfg)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = [im_end, tok.eos_token_id]
    if ends_turns:
        with torch.no_grad():
            direction = torch.randn(hidden)
            model.model.embed_tokens.weight += 0.5 * direction
            model.lm_head.weight[im_end] = 0.8 * direction / direction.norm()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


CHAT_RECORDS = [
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"What is {a} plus {b}?"}],
     "answer": str(a + b)}
    for a in range(6) for b in range(4)
]
PROMPT_RECORDS = [{"prompt": f"What is {a} plus {b}?", "answer": str(a + b)} for a in range(6) for b in range(4)]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def build_chat_pair(root: Path) -> Path:
    tok = chatml_tokenizer()
    save_qwen3(root / "student", tok, seed=0, ends_turns=True)
    save_qwen3(root / "teacher", tok, seed=1, hidden=48)
    write_jsonl(root / "chat.jsonl", CHAT_RECORDS)
    write_jsonl(root / "prompts.jsonl", PROMPT_RECORDS)
    return root
