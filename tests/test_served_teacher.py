"""The served teacher: `uopd serve-teacher` (the protocol `vllm serve` speaks) and the
`teacher.kind: server` client, on the tiny arith models.

The server runs in a thread of the test process (uvicorn on a free port); the kill test runs
both the server and the training as real processes, killing the server mid-run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import save_tiny_lm, text_overrides  # noqa: E402
from unified_opd.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from unified_opd.cli import main  # noqa: E402
from unified_opd.config import load_config  # noqa: E402
from unified_opd.distributions import Categorical  # noqa: E402
from unified_opd.domain import schema_for  # noqa: E402
from unified_opd.domains.lm.serve import load_server, make_app  # noqa: E402
from unified_opd.domains.lm.served import ServerPool, densify, top_entries  # noqa: E402
from unified_opd.domains.text.zoo import arith  # noqa: E402
from unified_opd.errors import UserError  # noqa: E402
from unified_opd.teacher_config import ServerConfig  # noqa: E402
from unified_opd.topk_diagnostics import topk_diagnostics  # noqa: E402
from unified_opd.trainer import Trainer  # noqa: E402


class ThreadServer:
    """`uopd serve-teacher`'s app in a background thread; `url` once it listens."""

    def __init__(self, model_dir: Path, top_k: int = 19):
        config = uvicorn.Config(make_app(load_server(str(model_dir), top_k)), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join()


@pytest.fixture(scope="module")
def served(tiny_text):
    s = ThreadServer(tiny_text / "teacher")
    yield s
    s.stop()


def _cfg(root, out, **extra):
    return load_config(None, text_overrides(root, out, **extra), schema_for)


def _server_run(root, out, url, **extra):
    return _cfg(root, out, **{"teacher.kind": "server", "teacher.urls": f"[{url}]", "teacher.server.retries": 0, **extra})


@pytest.mark.parametrize("view", ["same", "answer_hint"])
def test_served_top_k_equals_the_in_process_teachers(tiny_text, served, tmp_path, view):
    """On the student's own rollouts (left-padded prompts, completions cut at EOS; the hint view's
    longer prompt shifted onto the student's positions), the served top-k log-probs and ids are
    the in-process teacher's."""
    k = 5
    remote = Trainer(_server_run(tiny_text, tmp_path / "s", served.url, **{"teacher.server.top_k": k, "teacher.view": view}))
    local = Trainer(_cfg(tiny_text, tmp_path / "l", **{"teacher.view": view}))
    r = remote.policy.rollout(remote.data.next())
    got, want = remote.teacher.distribution(r), local.teacher.distribution(r)
    assert got.is_sparse and got.topk[0].shape == (*r.actions.shape, k)
    top, m = want.log_probs().topk(k, -1), r.mask
    assert torch.allclose(got.topk[0][m], top.values[m], atol=1e-4)
    assert torch.equal(got.topk[1][m], top.indices[m])
    inside = m & (got.topk[1] == r.actions.unsqueeze(-1)).any(-1)
    assert inside.any() and torch.allclose(got.log_prob(r.actions)[inside], want.log_prob(r.actions)[inside], atol=1e-4)


def test_a_served_run_trains_and_reports_top_k_diagnostics(tiny_text, served, tmp_path):
    out = Trainer(_server_run(tiny_text, tmp_path / "run", served.url, **{"trainer.max_steps": 2, "teacher.server.top_k": 4,
                                                                           "teacher.server.batch_size": 3})).train()
    assert out["steps"] == 2 and "reverse_kl" in out["after"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "topk/teacher_mass" in r)
    assert 0 < step["topk/teacher_mass"] <= 1 and 0 < step["topk/student_mass"] <= 1 and 0 <= step["topk/overlap"] <= 1


@pytest.mark.parametrize("kind", ["router", "pool"])
def test_a_url_is_a_teacher_inside_routers_and_pools(tiny_text, served, tmp_path, kind):
    s = str(tiny_text / "student")
    extra = {
        "router": {"teacher.experts": "{add: %s, sub: %s, mul: %s}" % (served.url, served.url, s)},
        "pool": {"teacher.members": f"[{served.url},{s}]"},
    }[kind]
    out = Trainer(_cfg(tiny_text, tmp_path / kind, **{"teacher.kind": kind, "trainer.max_steps": 2, "teacher.server.top_k": 19, **extra})).train()
    assert out["steps"] == 2


def test_densify_spreads_the_tail_like_the_sparse_categorical():
    lp = torch.log(torch.tensor([[0.5, 0.25]]))
    idx = torch.tensor([[3, 0]])
    full = densify(lp, idx, 6)
    assert torch.allclose(full.exp(), torch.tensor([[0.25, 0.0625, 0.0625, 0.5, 0.0625, 0.0625]]))
    sparse = Categorical.from_topk(lp, idx, 6)
    for a in range(6):
        assert math.isclose(float(full[0, a]), float(sparse.log_prob(torch.tensor([a]))[0]), abs_tol=1e-6)


def test_top_entries_drops_the_prompt_token_outside_the_top_k():
    position = {"7": {"logprob": -3.0, "rank": 9}, "2": {"logprob": -0.1, "rank": 1}, "5": {"logprob": -2.5, "rank": 2}}
    assert top_entries(position, 2) == [(2, -0.1), (5, -2.5)]
    with pytest.raises(UserError, match="returned 1 log-probs at a position, expected 2"):
        top_entries({"2": {"logprob": -0.1, "rank": 1}}, 2)


def test_topk_diagnostics_by_hand():
    student = Categorical.from_logits(torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])))
    teacher = Categorical.from_topk(torch.log(torch.tensor([[0.6, 0.2]])), torch.tensor([[3, 0]]), 4)
    d = topk_diagnostics(student, teacher)
    # teacher mass 0.8; student mass on {3, 0}: 0.5; student's top-2 {3, 2} shares one of 2 with {3, 0}
    assert d == pytest.approx({"topk/teacher_mass": 0.8, "topk/student_mass": 0.5, "topk/overlap": 0.5})


def test_retries_back_off_then_succeed_and_failing_servers_are_one_error():
    calls = []

    def flaky(request):
        calls.append(str(request.url))
        return httpx.Response(503, json={"error": {"message": "busy"}}) if len(calls) < 3 else httpx.Response(200, json={"ok": 1})

    cfg = ServerConfig(retries=3, backoff_s=0.01)
    pool = ServerPool(["http://a:1", "http://b:2"], cfg, "teacher.urls")
    pool.client = httpx.Client(transport=httpx.MockTransport(flaky))
    assert pool.call("GET", "/v1/models") == {"ok": 1}
    assert [u.split("/")[2] for u in calls] == ["b:2", "a:1", "b:2"]  # each retry on the next server
    calls.clear()
    pool.cfg = ServerConfig(retries=1, backoff_s=0.01)
    pool.client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503, text="down")))
    with pytest.raises(UserError, match=r"teacher.urls: the teacher server at http://.* did not answer after 2 tries .*HTTP 503: down"):
        pool.call("GET", "/v1/models")
    pool.client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(400, json={"error": {"message": "no such model"}})))
    with pytest.raises(UserError, match=r"refused the request \(HTTP 400\): no such model"):
        pool.call("GET", "/v1/models")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_up_errors_are_one_line_before_training(tiny_text, served, tmp_path, capsys):
    base = text_overrides(tiny_text, tmp_path / "e") + ["teacher.kind=server", "teacher.server.retries=0"]
    cases = {
        f"teacher.urls=[http://127.0.0.1:{_free_port()}]": "teacher.urls: the teacher server at http://127.0.0.1:",
        f"teacher.urls=[{served.url}] teacher.server.top_k=20": "teacher.server.top_k: 20 exceeds the max_logprobs 19",
        f"teacher.urls=[{served.url}] teacher.server.model=other": "teacher.server.model: 'other' is not served",
        "teacher.urls=[localhost:8000]": "teacher.urls[0]: expected http://host:port",
    }
    for args, message in cases.items():
        assert main(["train", "configs/text/opd_arith.yaml", *base, *args.split()]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e").exists()  # nothing written before the teacher answered


def test_a_server_with_another_tokenizer_is_refused(tiny_text, tmp_path):
    other = arith.build_tokenizer()
    other.add_tokens(["#"])
    server = ThreadServer(save_tiny_lm(tmp_path / "other", tok=other))
    try:
        with pytest.raises(UserError, match="has another tokenizer than the student's .*teacher.tokenizer: align or uld"):
            Trainer(_server_run(tiny_text, tmp_path / "run", server.url))
    finally:
        server.stop()


def _launch(args, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "unified_opd.cli", *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _wait_for(predicate, what: str, timeout: float = 300):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.2)


def _serving(url: str) -> bool:
    try:
        return httpx.get(url + "/v1/models", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow  # four launches of the CLI: about a minute on 2 cores
def test_killing_the_server_mid_run_stops_cleanly_and_restarting_both_resumes(tiny_text, tmp_path):
    """The server dies after a checkpoint: training retries with backoff, then exits 2 with one
    error line; the checkpoint is intact, and with the server back the same command resumes."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server_args = ["serve-teacher", str(tiny_text / "teacher"), "--port", str(port), "--top-k", "8"]
    out = tmp_path / "run"
    train_args = ["train", "configs/text/opd_arith.yaml", *text_overrides(tiny_text, out, **{
        "teacher.kind": "server", "teacher.urls": f"[{url}]", "teacher.server.top_k": 8, "teacher.server.retries": 3,
        "teacher.server.backoff_s": 0.2, "trainer.max_steps": 40, "trainer.save_every": 2, "trainer.log_every": 1,
        "trainer.max_time_minutes": 0, "eval.size": 8, "eval.batch_size": 8})]
    server = _launch(server_args, tmp_path / "server.log")
    _wait_for(lambda: _serving(url), "server start")
    train = _launch(train_args, tmp_path / "train.log")
    _wait_for(lambda: latest_checkpoint(out / "checkpoints") is not None, "first checkpoint")
    server.kill()
    server.wait()
    assert train.wait(timeout=300) == 2
    log = (tmp_path / "train.log").read_text()
    assert "retry 3/3" in log and "uopd: error: teacher.urls: the teacher server at" in log and "did not answer after 4 tries" in log
    ckpt = latest_checkpoint(out / "checkpoints")
    stopped_at = int(load_checkpoint(ckpt)["state"]["step"])  # complete and readable
    assert 0 < stopped_at < 40
    server = _launch(server_args, tmp_path / "server2.log")
    try:
        _wait_for(lambda: _serving(url), "server restart")
        train = _launch([*train_args, "trainer.resume=auto"], tmp_path / "resume.log")
        assert train.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-2000:]
    finally:
        server.kill()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps[-1] == 40 and min(s for s in steps if s > stopped_at) == stopped_at + 1
