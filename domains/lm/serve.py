"""`uopd serve-teacher MODEL_DIR`: any local Hugging Face causal LM behind the subset of vLLM's
OpenAI-compatible API that a served teacher needs, so one client (`served.py`) talks to both.

    GET  /v1/models       the model id, plus `max_logprobs`, `vocab_size` and `tokenizer_sha256`
                          (extra fields vLLM does not send; the client checks them when present)
    POST /tokenize        {prompt: str} -> {tokens, count, max_model_len} (vLLM's shape)
    POST /v1/completions  {prompt: str | [int] | [[int]] | [str], max_tokens, prompt_logprobs: k}
                          -> choices[i].prompt_logprobs: [null, {token id: {logprob, rank,
                          decoded_token}}, ...], one entry per prompt token: the top-k tokens of
                          the distribution that predicts it, plus the token itself (vLLM's shape)

A request's prompts are scored in one padded forward; forwards run one at a time (one model).
Completions are greedy (`temperature` 0) or sampled; the teacher client asks for one token.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Union

import torch
from pydantic import BaseModel

from unified_opd.errors import UserError

from .loading import load_causal_lm, max_context
from .served import tokenizer_fingerprint


class CompletionRequest(BaseModel):
    model: Optional[str] = None
    prompt: Union[str, List[int], List[List[int]], List[str]]
    max_tokens: int = 16
    temperature: float = 1.0
    prompt_logprobs: Optional[int] = None
    add_special_tokens: bool = True


class TokenizeRequest(BaseModel):
    model: Optional[str] = None
    prompt: str
    add_special_tokens: bool = True


@torch.no_grad()
def score(lm, prompts: List[List[int]]) -> torch.Tensor:
    """Log softmax of the logits at every position of each prompt `[B, n, V]` (float32), from one
    right-padded forward: each prompt's positions are 0..len-1, as unpadded."""
    n = max(len(p) for p in prompts)
    device = next(lm.parameters()).device
    ids = torch.tensor([p + [0] * (n - len(p)) for p in prompts], device=device)
    attn = torch.tensor([[1] * len(p) + [0] * (n - len(p)) for p in prompts], device=device)
    return torch.log_softmax(lm(input_ids=ids, attention_mask=attn).logits.float(), -1).cpu()


def prompt_logprobs(logp: torch.Tensor, prompts: List[List[int]], k: int, decoded: List[str]) -> List[list]:
    """Per prompt, per token t >= 1: the top-k of `logp` at t-1 plus token t itself, as
    `{str(id): {logprob, rank (1 = most likely), decoded_token}}`; token 0 has None."""
    top = logp[:, :-1].topk(min(k, logp.shape[-1]), -1)
    out = []
    for b, p in enumerate(prompts):
        own = torch.tensor(p[1:])
        rows = logp[b, : len(p) - 1]
        own_lp = rows.gather(-1, own.unsqueeze(-1))
        own_rank = ((rows > own_lp).sum(-1) + 1).tolist()
        values, indices = top.values[b].tolist(), top.indices[b].tolist()
        entries = [None]
        for t, (tok, lp, rank) in enumerate(zip(p[1:], own_lp.squeeze(-1).tolist(), own_rank)):
            row = {str(i): {"logprob": v, "rank": r + 1, "decoded_token": decoded[i]} for r, (i, v) in enumerate(zip(indices[t], values[t]))}
            row.setdefault(str(tok), {"logprob": lp, "rank": rank, "decoded_token": decoded[tok]})
            entries.append(row)
        out.append(entries)
    return out


class TeacherServer:
    """The model, its tokenizer and the protocol's handlers (plain methods, so tests can call them)."""

    def __init__(self, lm, tok, name: str, max_logprobs: int):
        self.lm, self.tok, self.name, self.max_logprobs = lm.eval().requires_grad_(False), tok, name, max_logprobs
        self.lock = threading.Lock()
        self.vocab_size = int(lm.get_output_embeddings().weight.shape[0])
        self.decoded = [tok.decode([i]) for i in range(self.vocab_size)]  # once: decoding per entry dominated a request

    def models(self) -> Dict[str, Any]:
        card = {
            "id": self.name, "object": "model", "owned_by": "unified_opd", "max_model_len": max_context(self.lm) or None,
            "max_logprobs": self.max_logprobs, "vocab_size": self.vocab_size, "tokenizer_sha256": tokenizer_fingerprint(self.tok),
        }
        return {"object": "list", "data": [card]}

    def tokenize(self, req: TokenizeRequest) -> Dict[str, Any]:
        tokens = self.tok(req.prompt, add_special_tokens=req.add_special_tokens)["input_ids"]
        return {"tokens": tokens, "count": len(tokens), "max_model_len": max_context(self.lm) or None}

    def _token_lists(self, req: CompletionRequest) -> List[List[int]]:
        prompt = req.prompt
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        return [self.tok(p, add_special_tokens=req.add_special_tokens)["input_ids"] if isinstance(p, str) else list(p) for p in prompt]

    def check(self, req: CompletionRequest, prompts: List[List[int]]) -> Optional[str]:
        """What is wrong with a request, in vLLM's words where vLLM has them; None when it is fine."""
        if req.model not in (None, self.name):
            return f"The model `{req.model}` does not exist."
        if req.prompt_logprobs is not None and req.prompt_logprobs > self.max_logprobs:
            return f"Requested prompt logprobs of {req.prompt_logprobs}, which is greater than max allowed: {self.max_logprobs}"
        if any(not p for p in prompts):
            return "a prompt is empty"
        if any(i < 0 or i >= self.vocab_size for p in prompts for i in p):
            return f"a token id is outside the vocabulary (size {self.vocab_size})"
        return None

    def complete(self, req: CompletionRequest, prompts: List[List[int]]) -> Dict[str, Any]:
        with self.lock:
            logp = score(self.lm, prompts)
            scored = prompt_logprobs(logp, prompts, req.prompt_logprobs, self.decoded) if req.prompt_logprobs is not None else None
            texts = [self._generate(p, req, logp[b, len(p) - 1]) for b, p in enumerate(prompts)]
        choices = [
            {"index": i, "text": text, "logprobs": None, "finish_reason": "length", "prompt_logprobs": scored[i] if scored else None}
            for i, text in enumerate(texts)
        ]
        return {"object": "text_completion", "model": self.name, "choices": choices}

    @torch.no_grad()
    def _generate(self, prompt: List[int], req: CompletionRequest, last: torch.Tensor) -> str:
        """The completion; one greedy token (what a teacher client asks for) comes from `last`,
        the scoring forward's log-probs after the prompt."""
        if req.max_tokens <= 0:
            return ""
        if req.max_tokens == 1 and req.temperature <= 0:
            return self.decoded[int(last.argmax())]
        ids = torch.tensor([prompt], device=next(self.lm.parameters()).device)
        sample = req.temperature > 0
        out = self.lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=req.max_tokens, do_sample=sample,
                               temperature=req.temperature if sample else None, top_p=None, top_k=None,
                               pad_token_id=self.tok.pad_token_id)
        return self.tok.decode(out[0, len(prompt):], skip_special_tokens=True)


def make_app(server: TeacherServer):
    """The FastAPI app of `server`; errors are HTTP 400 with vLLM's `{error: {message, ...}}` body."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"unified_opd teacher: {server.name}")

    def bad(message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "BadRequestError", "code": 400}}, status_code=400)

    @app.get("/v1/models")
    def models():
        return server.models()

    @app.post("/tokenize")
    def tokenize(req: TokenizeRequest):
        return server.tokenize(req)

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        prompts = server._token_lists(req)
        problem = server.check(req, prompts)
        return bad(problem) if problem else server.complete(req, prompts)

    return app


def load_server(model_dir: str, top_k: int, dtype: str = "float32", name: Optional[str] = None) -> TeacherServer:
    """The model at `model_dir` (a directory, `zoo:` name or Hub id) behind the protocol."""
    if top_k < 1:
        raise UserError(f"--top-k: expected a positive number of log-probs per position, got {top_k}")
    lm, tok = load_causal_lm(model_dir, dtype, False, "serve-teacher")
    return TeacherServer(lm, tok, name or model_dir, top_k)


def serve(model_dir: str, host: str, port: int, top_k: int, dtype: str = "float32", name: Optional[str] = None) -> None:
    """Load the model, then serve until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise UserError("serve-teacher needs the extra `serve`: pip install 'unified_opd[serve]'") from e
    server = load_server(model_dir, top_k, dtype, name)
    print(f"serving {server.name} at http://{host}:{port}/v1 (max_logprobs {top_k})", flush=True)
    uvicorn.run(make_app(server), host=host, port=port, log_level="warning")
