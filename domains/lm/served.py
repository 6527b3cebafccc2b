"""A teacher outside the training process: `teacher.kind: server` (and a URL as any teacher path).

`ServedTeacher` scores the student's sequences through an OpenAI-compatible `/v1/completions`
endpoint with `prompt_logprobs` (what `vllm serve`, SGLang and `uopd serve-teacher` expose) and
returns the top-k log-probs per position as the core's sparse `Categorical.from_topk` (the tail
bucket holds the remaining mass). Inside a router or pool it returns the same numbers as full
log-probs (the tail spread evenly over the other tokens), so it composes with in-process teachers;
so does a top_k that covers the whole vocabulary (then they are exact).

`ServerPool` owns the HTTP side: several `teacher.urls` taken in turn (a failed request moves on
to the next one), a bounded number of requests in flight, timeouts, and retries with exponential
backoff; a server still failing after them is a one-line UserError. `connect` checks, before
training starts, that the server answers, serves the named model with the student's tokenizer,
and allows `top_k` log-probs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from unified_opd.distributions import LOG_FLOOR, Categorical
from unified_opd.errors import UserError
from unified_opd.interfaces import Teacher
from unified_opd.rollout import Rollout

log = logging.getLogger(__name__)
RETRIED_STATUS = (408, 429, 500, 502, 503, 504)
MAX_BACKOFF_S = 30.0


def is_url(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(("http://", "https://"))


def tokenizer_fingerprint(tok) -> str:
    """SHA-256 of the tokenizer's vocabulary (token string -> id) as canonical JSON: equal
    fingerprints mean the same ids for the same token strings."""
    return hashlib.sha256(json.dumps(tok.get_vocab(), sort_keys=True).encode()).hexdigest()


@dataclass
class Endpoint:
    """What `connect` learnt: the model id to name in requests and the vocabulary size to check ids against."""

    model: str
    vocab_size: int


class ServerPool:
    """HTTP calls to one of several servers, in turn, with retries; errors name `field` and the URL."""

    def __init__(self, urls: Sequence[str], server_cfg: Any, field: str, role: str = "teacher",
                 retry_keys: str = "teacher.server.retries, teacher.server.backoff_s"):
        try:
            import httpx
        except ImportError as e:
            raise UserError(f"{field}: a served {role} needs httpx: pip install 'unified_opd[serve]'") from e

        self.httpx, self.urls, self.cfg, self.field = httpx, [u.rstrip("/") for u in urls], server_cfg, field
        self.role, self.retry_keys = role, retry_keys
        self.client = httpx.Client(timeout=server_cfg.timeout_s, limits=httpx.Limits(max_connections=server_cfg.concurrency * len(urls)))
        self.turn = 0
        self.lock = threading.Lock()

    def _next_url(self) -> str:
        with self.lock:
            self.turn += 1
            return self.urls[self.turn % len(self.urls)]

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, retries: Optional[int] = None) -> Dict[str, Any]:
        """The JSON answer of `method path`: connection errors, timeouts and 5xx/429 answers are
        retried (`teacher.server.retries` times, waiting backoff_s · 2^i, capped at 30 s, moving to
        the next URL each time); a 4xx answer is a UserError with the server's message at once."""
        retries = self.cfg.retries if retries is None else retries
        start, attempt = time.monotonic(), 0
        while True:
            url = self._next_url()
            try:
                r = self.client.request(method, url + path, json=body)
                if r.status_code not in RETRIED_STATUS:
                    if r.status_code >= 400:
                        raise ServerRefused(url, r.status_code, _message(r), self.role)
                    return r.json()
                problem = f"HTTP {r.status_code}: {_message(r)}"
            except self.httpx.TransportError as e:
                problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt >= retries:
                waited = time.monotonic() - start
                raise UserError(f"{self.field}: the {self.role} server at {url} did not answer after {attempt + 1} tries in {waited:.0f} s ({problem}); "
                                f"is it running? (retries: {self.retry_keys})")
            wait = min(MAX_BACKOFF_S, self.cfg.backoff_s * 2**attempt)
            log.warning("%s server %s: %s; retry %d/%d in %.1f s", self.role, url, problem, attempt + 1, retries, wait)
            time.sleep(wait)
            attempt += 1


class ServerRefused(UserError):
    def __init__(self, url: str, status: int, message: str, role: str = "teacher"):
        super().__init__(f"the {role} server at {url} refused the request (HTTP {status}): {message}")
        self.url, self.status, self.message = url, status, message


def _message(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    err = body.get("error", body.get("detail", body)) if isinstance(body, dict) else body
    return str(err.get("message", err) if isinstance(err, dict) else err)[:300]


def connect(pool: ServerPool, tokenizer, vocab_size: int) -> Endpoint:
    """Start-up checks of every server in the pool, one try each, so a typo fails at once:
    it answers; it serves `teacher.server.model` (or exactly one model); its tokenizer is the
    student's (the vocabulary fingerprint it reports, else `/tokenize` of a probe text); it
    allows `teacher.server.top_k` prompt log-probs (its reported max, then a probe request)."""
    cfg, endpoint = pool.cfg, None
    probe_text = tokenizer.decode([i for i in range(0, vocab_size, max(1, vocab_size // 512))], skip_special_tokens=True)
    probe_ids = tokenizer(probe_text)["input_ids"]
    for url in pool.urls:
        single = ServerPool([url], cfg, pool.field)
        card = _model_card(single, cfg.model, url)
        model = card["id"]
        if "tokenizer_sha256" in card:
            same = card["tokenizer_sha256"] == tokenizer_fingerprint(tokenizer)
        else:
            same = single.call("POST", "/tokenize", {"model": model, "prompt": probe_text}, retries=0)["tokens"] == probe_ids
        served_vocab = int(card.get("vocab_size") or vocab_size)
        if not same or served_vocab != vocab_size:
            raise UserError(f"{pool.field}: the model {model!r} at {url} has another tokenizer than the student's "
                            f"(vocabulary size {served_vocab} vs {vocab_size}); for another tokenizer set teacher.tokenizer: align or uld")
        if card.get("max_logprobs") is not None and card["max_logprobs"] < cfg.top_k:
            raise UserError(f"teacher.server.top_k: {cfg.top_k} exceeds the max_logprobs {card['max_logprobs']} of the server at {url}")
        try:
            single.call("POST", "/v1/completions", _request(model, [probe_ids[:16]], cfg.top_k), retries=0)
        except ServerRefused as e:
            raise UserError(f"teacher.server.top_k: the server at {url} refused prompt_logprobs={cfg.top_k} ({e.message}); "
                            "lower it or raise the server's limit (vllm serve --max-logprobs, uopd serve-teacher --top-k)") from e
        if endpoint is not None and model != endpoint.model:
            raise UserError(f"{pool.field}: the servers serve different models ({endpoint.model!r} and {model!r})")
        endpoint = Endpoint(model, vocab_size)
    return endpoint


def _model_card(pool: ServerPool, wanted: Optional[str], url: str) -> Dict[str, Any]:
    cards = pool.call("GET", "/v1/models", retries=0).get("data", [])
    ids = [c.get("id") for c in cards]
    if wanted is not None:
        if wanted not in ids:
            raise UserError(f"teacher.server.model: {wanted!r} is not served at {url} (it serves {ids})")
        return cards[ids.index(wanted)]
    if len(cards) != 1:
        raise UserError(f"teacher.server.model: the server at {url} serves {len(cards)} models {ids}; name one")
    return cards[0]


def _request(model: str, prompts: List[List[int]], top_k: int) -> Dict[str, Any]:
    # one generated token: vLLM needs max_tokens >= 1; the scores are in prompt_logprobs
    return {"model": model, "prompt": prompts, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": top_k}


def top_entries(position: Dict[str, Dict[str, Any]], k: int) -> List[tuple]:
    """The k most likely `(token id, log-prob)` of one position of `prompt_logprobs`: the entries
    of rank <= k (vLLM adds the prompt's own token whatever its rank), most likely first."""
    ranked = sorted(((int(i), e["logprob"]) for i, e in position.items() if e.get("rank") is None or e["rank"] <= k), key=lambda x: -x[1])
    if len(ranked) < k:
        raise UserError(f"teacher.server.top_k: the server returned {len(ranked)} log-probs at a position, expected {k}")
    return ranked[:k]


def scored_rows(choices: List[Dict[str, Any]], k: int, vocab_size: int, length: int):
    """`prompt_logprobs` of unpadded prompts -> (log-probs, ids) `[B, length, k]`, row b's
    position t holding the distribution of its token t (t = 0 and t >= its length: filler of
    mass k/V, never trained on)."""
    lp = torch.full((len(choices), length, k), -math.log(vocab_size))
    ids = torch.arange(k).repeat(len(choices), length, 1)
    for b, choice in enumerate(choices):
        for t, position in enumerate(choice["prompt_logprobs"][1:], start=1):
            top = top_entries(position, k)
            ids[b, t] = torch.tensor([i for i, _ in top])
            lp[b, t] = torch.tensor([v for _, v in top])
    return lp, ids


def densify(logprobs: Tensor, indices: Tensor, vocab_size: int) -> Tensor:
    """Top-k log-probs -> full log-probs `[..., V]`: each of the V - k other tokens gets
    (1 - Σ_k p_k) / (V - k), what the sparse Categorical's tail bucket assigns them one by one."""
    k = logprobs.shape[-1]
    tail = torch.log1p(-logprobs.float().logsumexp(-1, keepdim=True).exp().clamp(max=1.0)) - math.log(max(1, vocab_size - k))
    full = tail.clamp_min(LOG_FLOOR).expand(*logprobs.shape[:-1], vocab_size).clone()
    return full.scatter(-1, indices.long(), logprobs.float())


class ServedTeacher(Teacher):
    """The teacher behind `pool`, scoring `rollout.view_for_teacher` token by token.

    A view row is sent as its attended tokens only (padding and masked-out tokens dropped); the
    HF forward in process gives those tokens the same positions (`position_ids` from the
    attention mask), so the served log-probs are those of the in-process teacher."""

    def __init__(self, pool: ServerPool, endpoint: Endpoint, dense: bool = False):
        self.pool, self.endpoint, self.dense = pool, endpoint, dense
        self.k = min(pool.cfg.top_k, endpoint.vocab_size)
        self.workers = ThreadPoolExecutor(max_workers=pool.cfg.concurrency * len(pool.urls))

    def _score(self, prompts: List[List[int]]) -> List[Dict[str, Any]]:
        n = self.pool.cfg.batch_size
        chunks = [prompts[i : i + n] for i in range(0, len(prompts), n)]
        answers = self.workers.map(lambda c: self.pool.call("POST", "/v1/completions", _request(self.endpoint.model, c, self.k)), chunks)
        return [choice for a in answers for choice in sorted(a["choices"], key=lambda c: c["index"])]

    def distribution(self, rollout: Rollout) -> Categorical:
        view = rollout.view_for_teacher
        if "images" in view:
            raise UserError("teacher.kind: a served teacher scores token ids only; this rollout's teacher view has images")
        ids, attn = view["input_ids"].cpu(), view["attention_mask"].cpu().bool()
        prompts = [row[keep].tolist() for row, keep in zip(ids, attn)]
        lp, idx = scored_rows(self._score(prompts), self.k, self.endpoint.vocab_size, ids.shape[1])
        # view position p predicts token p+1, which is the unpadded token cumsum(attn)[p+1] - 1
        where = (attn.long().cumsum(-1) - 1).clamp_min(0)[:, 1:]
        lp, idx = (t.gather(1, where.unsqueeze(-1).expand(-1, -1, self.k)) for t in (lp, idx))
        lp, idx = (align_to_student(t, view["prompt_len"] - rollout.student_view["prompt_len"]) for t in (lp, idx))
        device = rollout.loss_mask.device
        # k = V is the whole distribution: dense, since an empty tail bucket has no gradient (log(1 - 1))
        if self.dense or self.k >= self.endpoint.vocab_size:
            return Categorical.from_logits(densify(lp, idx, self.endpoint.vocab_size).to(device))
        return Categorical.from_topk(lp.to(device), idx.to(device), self.endpoint.vocab_size)


def align_to_student(t: Tensor, shift: int) -> Tensor:
    """A teacher view's positions onto the student's (the view's prompt is `shift` tokens longer),
    as `scoring.view_distribution` does; positions before the view's start repeat its first."""
    if shift > 0:
        return t[:, shift:]
    if shift < 0:
        return torch.cat([t[:, :1].expand(-1, -shift, *t.shape[2:]), t], 1)
    return t


def served_teacher(urls: Sequence[str], server_cfg: Any, field: str, tokenizer, vocab_size: int, dense: bool = False) -> ServedTeacher:
    """A `ServedTeacher` over `urls`, after `connect`'s start-up checks."""
    pool = ServerPool(urls, server_cfg, field)
    return ServedTeacher(pool, connect(pool, tokenizer, vocab_size), dense)
