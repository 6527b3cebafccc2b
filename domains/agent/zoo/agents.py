"""Zoo entries `keydoor`, `shop` and `toolcalc`: a teacher agent and a weaker student per env.

`uopd zoo build keydoor` (a few minutes on CPU) writes `teacher/` and `student/` (Hugging Face
Llama models sharing one tokenizer) and `card.json` (their held-out success rates). Both are
trained by supervised learning on the scripted expert's actions, in the plain transcript format
of `transcript.PlainFormat`:

* the teacher (larger or longer-trained) on twice as many episodes; with `noise` > 0 the second half is
  DAgger-style: with probability `noise` a turn executes a random action seen elsewhere in the
  expert data (kept as untrained context), so the teacher also learns the expert's recovery;
  with `noise` None it trains on the clean episodes only (ScienceWorld: the seeds past its 124
  train variations wrap around, so a second clean half would replay the same gold sequences);
* the student (smaller or briefly trained) on clean expert episodes only, so it drifts and
  compounds errors -- the gap that multi-turn OPD closes. With `student_env_kwargs` its
  episodes come from an easier version of the env (KeyDoor: depth 4 instead of 6), so it masters
  the short task and fails to generalise to the longer one the teacher and the configs play.

The tokenizer is word-level with a character fallback (a `tokenizers` WordPiece model without
a continuation prefix): lower-case words seen in the expert data, optionally with a `:number`
tail (KeyDoor's exits `s:3`), with or without one leading space, are one token; anything else
(digits, punctuation, unseen words) falls back to single characters, so every printable string
round-trips exactly.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from unified_opd.domains.lm import Sampling
from unified_opd.domains.lm.tiny import SPECIALS, fast_tokenizer, tiny_llama
from unified_opd.envs import CHARSET
from unified_opd.supervised import SupervisedPlan, fit, model_loss
from unified_opd.zoo import console, register_zoo

from ..env_ids import env_factory
from ..episodes import Limits, run_episodes, summarise
from ..transcript import PlainFormat, Transcript

# A word is lower-case letters, optionally with a `:number` tail: a KeyDoor exit `s:3` is then
# one token, so finding the exit to room r+1 is one attention lookup instead of matching digits
# and copying the letter two positions before them (slow to learn: see docs/agent.md, Zoo).
WORD = r" ?[a-z]+(?::[0-9]+)?"
PRE_TOKEN = WORD + r"| ?[^a-z ]| "
EVAL_SEED_START = 1_000_000  # the configs' env.eval_seed_start; zoo data never uses these seeds
HELD_OUT_BATCH = 16  # episodes played side by side for the card
SCIENCEWORLD_TASKS = ("lifespan-longest-lived", "lifespan-shortest-lived")


@dataclass
class ModelSpec:
    hidden: int
    layers: int
    steps: int
    heads: int = 4
    lr: float = 3e-3
    batch: int = 16
    context: int = 1024

    def build(self, tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
        return tiny_llama(tok, self.hidden, self.layers, self.heads, self.context)


@dataclass
class Entry:
    env_id: str
    env_kwargs: Dict = field(default_factory=dict)
    episodes: int = 1500  # clean expert episodes (and as many noisy ones for the teacher)
    noise: Optional[float] = 0.25  # teacher data: chance a turn executes a random action (None: clean data only)
    teacher: ModelSpec = field(default_factory=lambda: ModelSpec(hidden=96, layers=3, steps=400))
    student: ModelSpec = field(default_factory=lambda: ModelSpec(hidden=48, layers=2, steps=120))
    student_env_kwargs: Optional[Dict] = None  # the student's demos' env kwargs (default: env_kwargs)
    eval_env_kwargs: Optional[Dict] = None  # merged over env_kwargs for the card's held-out figures
    eval_episodes: int = 100  # held-out episodes on the card
    version: int = 1  # the zoo cache version: bump when anything above changes

    def student_entry(self) -> "Entry":
        """This entry with the env the student's demos come from."""
        kwargs = self.env_kwargs if self.student_env_kwargs is None else self.student_env_kwargs
        return replace(self, env_kwargs=kwargs)


# KeyDoor and Shop teachers train on clean expert episodes only (noise 0, twice as many): with
# DAgger data (noise 0.25, 500 steps at lr 6e-3) the KeyDoor teacher had not learnt to copy the
# key colour when the 15-minute budget ran out (held-out success 0.05; docs/agent.md, Zoo).
# The KeyDoor student has the teacher's size but learnt on depth-4 episodes: smaller or shorter-
# trained depth-6 students never learnt that colour copy, by SFT or by OPD, so their gap was
# one abrupt skill rather than the multi-turn behaviour OPD is meant to transfer (docs/agent.md).
ENTRIES = {
    "keydoor": Entry(
        "uopd/KeyDoor-v0", {"depth": 6}, noise=0.0,
        teacher=ModelSpec(hidden=96, layers=3, steps=350), student=ModelSpec(hidden=96, layers=3, steps=300),
        student_env_kwargs={"depth": 4}, version=2,  # 2: the student learns on depth 4
    ),
    "shop": Entry(
        "uopd/Shop-v0", noise=0.0,
        teacher=ModelSpec(hidden=96, layers=3, steps=300, lr=6e-3), student=ModelSpec(hidden=64, layers=2, steps=250),
        version=2,  # 2: the student trains 250 steps instead of 100
    ),
    # ScienceWorld's two lifespan tasks (4-8 gold actions: walk to the outside, focus on the animal
    # with the longest / shortest life span among those there); demos are the gold sequences of
    # the 62 + 62 train variations, the card scores the 32 + 32 test variations
    "scienceworld": Entry(
        "uopd/ScienceWorld-v0", {"tasks": list(SCIENCEWORLD_TASKS), "max_turns": 12}, episodes=124, noise=None,
        teacher=ModelSpec(hidden=128, layers=3, steps=400, batch=8, context=2048),
        student=ModelSpec(hidden=64, layers=2, steps=120, batch=8, context=2048),
        eval_env_kwargs={"split": "test", "gold_path": False}, eval_episodes=64,
    ),
    "toolcalc": Entry(  # 2: clean data, 600 steps at lr 6e-3 (was DAgger data, 400 at 3e-3: teacher 0.06)
        "uopd/ToolCalc-v0", noise=0.0, teacher=ModelSpec(hidden=96, layers=3, steps=600, lr=6e-3), version=2,
    ),
}


# ------------------------------------------------------------------ tokenizer
def build_tokenizer(texts: Sequence[str]) -> PreTrainedTokenizerFast:
    """Word-level tokens for the words in `texts`, single characters for everything else."""
    words = Counter(w for t in texts for w in re.findall(WORD, t))
    chars = list(CHARSET)
    vocab: Dict[str, int] = {}
    for t in SPECIALS + chars + [" " + c for c in chars if c != " "] + sorted(w for w in words if len(w.strip()) > 1):
        vocab.setdefault(t, len(vocab))
    pieces = models.WordPiece(vocab=vocab, unk_token="<unk>", continuing_subword_prefix="", max_input_chars_per_word=1000)
    return fast_tokenizer(pieces, pre_tokenizers.Split(Regex(PRE_TOKEN), behavior="isolated"), decoders.Fuse())


# ------------------------------------------------------------------ expert data
@dataclass
class Demo:
    """One expert episode: observations, executed actions, and which turns are expert labels."""

    observations: List[str]
    actions: List[str]
    labelled: List[bool]


def expert_demos(entry: Entry, seeds: Sequence[int], noise: float, rng: random.Random, pool: Sequence[str] = ()) -> List[Demo]:
    """Play the scripted expert; with probability `noise` a turn instead executes a random
    action from `pool` (unlabelled), so later turns show the expert recovering."""
    make = env_factory(entry.env_id, entry.env_kwargs)
    demos = []
    for seed in seeds:
        env = make()
        obs, info = env.reset(seed=int(seed))
        d = Demo([], [], [])
        done = False
        while not done:
            off_track = bool(pool) and rng.random() < noise
            action = rng.choice(pool) if off_track else env.unwrapped.expert_action()
            d.observations.append(obs)
            d.actions.append(action)
            d.labelled.append(not off_track)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        demos.append(d)
        env.close()
    return demos


def demo_transcript(demo: Demo, fmt: PlainFormat, tok) -> Transcript:
    """The demo in the rollout's transcript format; only the expert's labelled actions are agent tokens."""
    t = Transcript()
    history: List = []
    for turn, (obs, action, labelled) in enumerate(zip(demo.observations, demo.actions, demo.labelled)):
        t.add(fmt.context(history, obs), turn, agent=False)
        t.add(tok(action, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], turn, agent=labelled)
        history.append((obs, action))
    return t


# ------------------------------------------------------------------ supervised training
def sft_batch(transcripts: Sequence[Transcript], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-padded ids; labels are the ids on agent tokens and -100 elsewhere."""
    n = max(len(t) for t in transcripts)
    ids = torch.full((len(transcripts), n), pad_id)
    labels = torch.full((len(transcripts), n), -100)
    attn = torch.zeros((len(transcripts), n), dtype=torch.long)
    for i, t in enumerate(transcripts):
        x = torch.tensor(t.ids)
        ids[i, : len(t)] = x
        attn[i, : len(t)] = 1
        labels[i, : len(t)] = torch.where(torch.tensor(t.agent), x, torch.full_like(x, -100))
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def train_supervised(model, tok, data: Sequence[Transcript], spec: ModelSpec, seed: int, label: str) -> float:
    """Next-token training on the agent tokens (`unified_opd.supervised.fit`: AdamW, warm-up +
    cosine LR); returns the last loss."""

    def draw(generator: torch.Generator) -> Dict[str, torch.Tensor]:
        idx = torch.randint(len(data), (spec.batch,), generator=generator).tolist()
        return sft_batch([data[i] for i in idx], tok.pad_token_id)

    losses = fit(model, model_loss, draw, SupervisedPlan(spec.steps, spec.lr, seed, title=f"zoo {label}")).losses
    return losses[-1] if losses else float("nan")


def held_out(model, tok, entry: Entry, episodes: Optional[int] = None) -> Dict[str, float]:
    """Greedy success rate, mean return and turns on the configs' held-out seeds (and
    `entry.eval_env_kwargs`, e.g. ScienceWorld's test split)."""
    make = env_factory(entry.env_id, {**entry.env_kwargs, **(entry.eval_env_kwargs or {})})
    seeds = list(range(EVAL_SEED_START, EVAL_SEED_START + (episodes or entry.eval_episodes)))
    limits = Limits(max_turns=0, max_action_tokens=32, max_tokens=model.config.max_position_embeddings)
    played = []
    # in batches: every running episode holds an env (ScienceWorld: a simulator JVM of ~0.4 GB)
    for i in range(0, len(seeds), HELD_OUT_BATCH):
        played += run_episodes(model, tok, PlainFormat(tok), make, seeds[i : i + HELD_OUT_BATCH], Sampling(greedy=True), limits)
    return summarise(played)


def build_entry(name: str, entry: Entry, dest: Path) -> None:
    """Expert data -> tokenizer -> teacher and student -> card.json."""
    t0 = time.time()
    rng = random.Random(0)
    clean = expert_demos(entry, range(entry.episodes), 0.0, rng)
    pool = sorted({a for d in clean for a in d.actions})
    noisy = [] if entry.noise is None else expert_demos(entry, range(entry.episodes, 2 * entry.episodes), entry.noise, rng, pool)
    student_demos = clean
    if entry.student_env_kwargs is not None:
        student_demos = expert_demos(entry.student_entry(), range(entry.episodes), 0.0, rng)
    tok = build_tokenizer([text for d in clean + noisy + student_demos for text in d.observations + d.actions])
    fmt = PlainFormat(tok)
    data = {
        "teacher": [demo_transcript(d, fmt, tok) for d in clean + noisy],
        "student": [demo_transcript(d, fmt, tok) for d in student_demos],
    }
    card: Dict = {"env": entry.env_id, "env_kwargs": entry.env_kwargs, "vocab_size": len(tok)}
    card["student_env_kwargs"] = entry.student_entry().env_kwargs
    card["max_transcript_tokens"] = max(len(t) for t in data["teacher"])
    for seed, (role, spec) in enumerate((("teacher", entry.teacher), ("student", entry.student)), start=1):
        torch.manual_seed(seed)
        model = spec.build(tok)
        loss = train_supervised(model, tok, data[role], spec, seed, f"{name} {role}")
        model.save_pretrained(dest / role)
        tok.save_pretrained(dest / role)
        figures = held_out(model, tok, entry)
        card[role] = {"parameters": sum(p.numel() for p in model.parameters()), "final_loss": loss, **figures}
        if role == "student" and entry.student_env_kwargs is not None:
            card[role]["on_its_training_env"] = held_out(model, tok, entry.student_entry())
        console.print(f"zoo {name} {role}: {card[role]['parameters']:,} parameters, held-out success {figures['success_rate']:.2f}")
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))


def _register(name: str, entry: Entry) -> None:
    @register_zoo(name, entry.version)
    def builder(dest: Path) -> None:
        build_entry(name, entry, dest)

    builder.__doc__ = f"Teacher and student agents for {entry.env_id} {entry.env_kwargs or ''}".strip()


for _name, _entry in ENTRIES.items():
    _register(_name, _entry)
