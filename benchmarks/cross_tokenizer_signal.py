"""What the align teacher's signal is on `arith`, next to the same-tokenizer teacher's, on the
same student rollouts: the per-token advantages log q − log π_θ(a) of the sampled-token loss that
each teacher hands the initial zoo student.

One batch of `--batch` training prompts x 1 sample (`configs/text/opd_arith.yaml`, temperature 1)
is scored by the character-level teacher (`--same-teacher`, view same) and by the pair teacher
(`--pair-teacher`, `teacher.tokenizer: align`). Reported, over the completion tokens (EOS
included):

* the share in spans of one student token and one teacher token, where align's target is the
  pair teacher's own token probability (the rest share a multi-token span's log-probability);
* per group (one-to-one / multi-token spans / all, and multi-token spans summed per span, where
  align's targets are exact): the mean advantage of each teacher (its negative estimates the
  reverse KL per token), the correlation of the two teachers' advantages and how often their
  signs agree;
* how well each teacher's sequence advantage Σ_t (log q_t − log π_θ(a_t)) separates correct
  from wrong completions (the AUC: the chance a correct completion gets the larger one), its
  mean on each; over all completions, those the pair teacher cuts otherwise and the rest.

    OMP_NUM_THREADS=1 python benchmarks/cross_tokenizer_signal.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

CONFIG = "configs/text/opd_arith.yaml"


def auc(correct: torch.Tensor, score: torch.Tensor) -> float:
    """The chance a correct completion scores above a wrong one (ROC AUC); nan without both kinds."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(correct.numpy(), score.numpy())) if 0 < int(correct.sum()) < len(correct) else float("nan")


def group_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean of each advantage, their Pearson correlation and the share of tokens where their signs agree."""
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if len(a) > 1 else float("nan")
    return {"n": len(a), "same": float(a.mean()), "align": float(b.mean()), "corr": corr, "sign": float(((a > 0) == (b > 0)).float().mean())}


def spans_of(teacher, rollout) -> tuple:
    """(`[B, P]` span number of each completion position, -1 elsewhere; `[n_spans]` whether a
    span holds one student token and one teacher token), from the align teacher's span table."""
    view = rollout.student_view
    ids, attn, P = view["input_ids"].cpu(), view["attention_mask"].cpu().bool(), view["prompt_len"]
    number, single = torch.full(rollout.loss_mask.shape, -1, dtype=torch.long), []
    for b, (r, a) in enumerate(zip(ids, attn)):
        _, _, spans, _, _ = teacher._teacher_row(r[:P][a[:P]].tolist(), r[P:][a[P:]].tolist())
        for s, t in spans:
            number[b, P - 1 + s.start : P - 1 + s.stop] = len(single)
            single.append(len(s) == 1 and len(t) == 1)
    return number, torch.tensor(single)


def main(argv=None) -> None:
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--same-teacher", default="zoo:arith/teacher")
    p.add_argument("--pair-teacher", default="runs/bench_cross_tokenizer/answer-tail_teacher_256x6_1000")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/cross_tokenizer_signal")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    common = [f"rollout.batch_size={args.batch}", "rollout.num_samples=1", f"trainer.seed={args.seed}", f"trainer.output_dir={args.out}",
              "trainer.save_every=0", "eval.kl=false", "eval.teacher=false"]
    same = Trainer(load_config(CONFIG, [f"teacher.path={args.same_teacher}", *common], schema_for))
    align = Trainer(load_config(CONFIG, [f"teacher.path={args.pair_teacher}", "teacher.tokenizer=align", *common], schema_for))
    rollout = same.rollouts.next(0)
    with torch.no_grad():
        student = same.policy.distribution(rollout).log_prob(rollout.actions).cpu()
        adv_same = same.teacher.distribution(rollout).log_prob(rollout.actions).cpu() - student
        adv_align = align.teacher.distribution(rollout).log_prob(rollout.actions).cpu() - student
    mask = rollout.loss_mask.cpu().bool()
    number, single = spans_of(align.teacher, rollout)
    exact = mask & (number >= 0) & single[number.clamp(min=0)]
    per_span = {k: torch.zeros(len(single)).index_add_(0, number[mask], v[mask]) for k, v in (("same", adv_same), ("align", adv_align))}
    command = " ".join(["python benchmarks/cross_tokenizer_signal.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"`{command}`",
             f"{args.batch} completions, {int(mask.sum())} completion tokens; {float(exact.sum() / mask.sum()):.1%} of them in one-to-one spans.", "",
             "| tokens | n | mean advantage, same teacher | mean advantage, align | correlation | signs agree |", "|---|---|---|---|---|---|"]
    for name, m in (("one-to-one spans", exact), ("multi-token spans", mask & ~exact), ("all", mask)):
        g = group_stats(adv_same[m], adv_align[m])
        lines.append(f"| {name} | {g['n']} | {g['same']:+.3f} | {g['align']:+.3f} | {g['corr']:.3f} | {g['sign']:.1%} |")
    g = group_stats(per_span["same"][~single], per_span["align"][~single])
    lines.append(f"| multi-token spans, summed per span | {g['n']} spans | {g['same']:+.3f} | {g['align']:+.3f} | {g['corr']:.3f} | {g['sign']:.1%} |")
    correct = rollout.outcome.cpu().bool()
    cut = (mask & ~exact).any(-1)
    lines += ["", "| completions | n (correct) | AUC same | AUC align | Σ advantage correct / wrong, same | align |", "|---|---|---|---|---|---|"]
    for name, rows in (("all", torch.ones_like(correct)), ("cut otherwise by the pair teacher", cut), ("one-to-one only", ~cut)):
        c, w = rows & correct, rows & ~correct
        seq = {k: (v * mask).sum(-1) for k, v in (("same", adv_same), ("align", adv_align))}
        lines.append(
            f"| {name} | {int(rows.sum())} ({int(c.sum())}) | {auc(correct[rows], seq['same'][rows]):.3f} | {auc(correct[rows], seq['align'][rows]):.3f} | "
            f"{float(seq['same'][c].mean()):+.2f} / {float(seq['same'][w].mean()):+.2f} | {float(seq['align'][c].mean()):+.2f} / {float(seq['align'][w].mean()):+.2f} |"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "signal.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
