"""The lean KV-cache sampler against transformers: greedy tokens equal `generate`'s, top-k/top-p
filtering equals HF's warpers, and the inverse-CDF draw follows softmax(logits)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from unified_opd.domains.lm.sampler import draw, filter_logits, sample


def _model(kind: str):
    torch.manual_seed(0)
    common = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(LlamaConfig(**common)) if kind == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_greedy_matches_generate_on_left_padded_prompts(kind):
    lm = _model(kind)
    ids = torch.randint(3, 40, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[1, :1] = 0
    ids = ids.masked_fill(mask == 0, 0)
    ref = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=0)
    ours = sample(lm, ids, mask, 12, eos_id=2, pad_id=0, greedy=True)
    assert torch.equal(ours, ref)


def test_rows_that_reach_eos_are_padded_like_generate():
    lm = _model("llama")
    head = torch.nn.Linear(32, 40, bias=True)
    head.weight.data.copy_(lm.lm_head.weight.data)
    lm.lm_head = head
    ids = torch.randint(3, 40, (8, 4))
    mask = torch.ones_like(ids)
    for boost in torch.linspace(0.0, 3.0, 31):  # raise EOS until some rows end early and others later
        head.bias.data.zero_()
        head.bias.data[2] = boost
        ours = sample(lm, ids, mask, 10, eos_id=2, pad_id=0, greedy=True)
        ended = (ours[:, 4:] == 2).any(-1)
        if ended.any() and not ended.all():
            break
    else:
        pytest.fail("no EOS boost gave a mix of finished and unfinished rows")
    ref = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=2, pad_token_id=0)
    assert torch.equal(ours, ref)
    first = (ours[ended, 4:] == 2).float().argmax(-1)
    for row, k in zip(ours[ended, 4:], first):
        assert (row[k + 1 :] == 0).all()


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.7), (7, 0.9), (0, 0.05)])
def test_filter_matches_hf_warpers(top_k, top_p):
    torch.manual_seed(1)
    logits = torch.randn(6, 30) * 3
    ref = logits.clone()
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    ours = filter_logits(logits, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    assert torch.equal(ours[~torch.isinf(ours)], logits[~torch.isinf(ref)])


def test_draw_follows_the_softmax():
    torch.manual_seed(2)
    logits = torch.tensor([2.0, 0.5, -1.0, 1.0, float("-inf")])
    n = 200_000
    counts = torch.bincount(draw(logits.expand(n, -1)), minlength=5).float() / n
    expected = torch.softmax(logits, -1)
    assert counts[4] == 0
    assert torch.allclose(counts, expected, atol=4 * (expected * (1 - expected) / n).sqrt().max().item())
