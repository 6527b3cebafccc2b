"""Composite teachers: routing by task tag and log-linear pooling, for Gaussians and Categoricals."""

from __future__ import annotations

import pytest
import torch

import unified_opd as uo
from unified_opd.errors import UserError
from unified_opd.teachers import PooledTeacher, RoutedTeacher, merge_distributions


class ConstTeacher(uo.Teacher):
    """Gaussian mean = its id + the trajectory's own marker, so we can see who scored what."""

    def __init__(self, ident: float):
        self.ident = ident
        self.seen = []

    def distribution(self, rollout):
        marker = rollout.student_view["marker"]
        self.seen.append(marker.tolist())
        mean = self.ident + marker.float().reshape(-1, 1, 1).expand(-1, rollout.loss_mask.shape[1], 2)
        return uo.Gaussian(mean, 0.5)


class LogitTeacher(uo.Teacher):
    def __init__(self, table: torch.Tensor, sparse: bool = False, lazy: bool = False):
        self.table, self.sparse, self.lazy = table, sparse, lazy

    def distribution(self, rollout):
        rows = self.table[rollout.student_view["marker"]]  # [b, P, V]
        if self.sparse:
            lp = torch.log_softmax(rows, -1)
            top = lp.topk(2, -1)
            return uo.Categorical.from_topk(top.values, top.indices, rows.shape[-1])
        if self.lazy:
            return uo.Categorical.from_hidden(rows, torch.eye(rows.shape[-1]))
        return uo.Categorical.from_logits(rows)


def rollout(tasks, positions=3):
    b = len(tasks)
    return uo.Rollout(
        actions=torch.zeros(b, positions, dtype=torch.long),
        loss_mask=torch.ones(b, positions, dtype=torch.long),
        step_ids=torch.zeros(b, positions, dtype=torch.long),
        student_view={"marker": torch.arange(b)},
        task=list(tasks),
    )


def test_router_sends_each_task_to_its_teacher_and_keeps_batch_order():
    low, high = ConstTeacher(100.0), ConstTeacher(200.0)
    routes = {str(c): low for c in range(5)} | {str(c): high for c in range(5, 10)}
    r = rollout(["7", "1", "9", "3", "5"])
    d = RoutedTeacher(routes).distribution(r)
    assert low.seen == [[1, 3]] and high.seen == [[0, 2, 4]]  # one call per teacher, its trajectories only
    assert d.mean[:, 0, 0].tolist() == [200.0, 101.0, 202.0, 103.0, 204.0]
    assert d.mean.shape == (5, 3, 2)


def test_router_unrouted_tag_and_default():
    t = ConstTeacher(0.0)
    with pytest.raises(UserError, match="'x'"):
        RoutedTeacher({"a": t}).distribution(rollout(["a", "x"]))
    d = RoutedTeacher({"a": t}, default=ConstTeacher(50.0)).distribution(rollout(["a", "x"]))
    assert d.mean[:, 0, 0].tolist() == [0.0, 51.0]


@pytest.mark.parametrize("kind", ["dense", "lazy", "sparse"])
def test_router_merges_categoricals(kind):
    torch.manual_seed(0)
    tables = [torch.randn(4, 3, 6), torch.randn(4, 3, 6)]
    ta = LogitTeacher(tables[0], sparse=kind == "sparse", lazy=kind == "lazy")
    tb = LogitTeacher(tables[1], sparse=kind == "sparse", lazy=kind == "lazy")
    r = rollout(["b", "a", "a", "b"])
    d = RoutedTeacher({"a": ta, "b": tb}).distribution(r)
    which = [1, 0, 0, 1]
    if kind == "sparse":
        lp = torch.stack([torch.log_softmax(tables[w][i], -1).topk(2, -1).values for i, w in enumerate(which)])
        torch.testing.assert_close(d.topk[0], lp)
    else:
        ref = torch.stack([torch.log_softmax(tables[w][i], -1) for i, w in enumerate(which)])
        torch.testing.assert_close(d.log_probs(), ref)


def test_merge_rejects_mixed_kinds():
    g = uo.Gaussian(torch.zeros(1, 2), 1.0)
    c = uo.Categorical.from_logits(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="different kinds"):
        merge_distributions([g, c], [torch.tensor([0]), torch.tensor([1])])


def test_pooled_teacher_is_log_linear_pool():
    a, b = ConstTeacher(1.0), ConstTeacher(3.0)
    d = PooledTeacher([a, b], [0.25, 0.75]).distribution(rollout(["x", "y"]))
    assert d.mean[:, 0, 0].tolist() == [2.5, 3.5]  # equal σ: weighted mean of means
    torch.testing.assert_close(d.std, torch.full_like(d.std, 0.5))
    ta, tb = LogitTeacher(torch.randn(2, 3, 5)), LogitTeacher(torch.randn(2, 3, 5))
    r = rollout(["x", "y"])
    p = PooledTeacher([ta, tb], [0.5, 0.5]).distribution(r)
    ref = torch.log_softmax(0.5 * torch.log_softmax(ta.table, -1) + 0.5 * torch.log_softmax(tb.table, -1), -1)
    torch.testing.assert_close(p.log_probs(), ref)
    with pytest.raises(UserError, match="one weight per teacher"):
        PooledTeacher([ta, tb], [1.0])


def test_composite_state_is_prefixed_per_child():
    class Stateful(ConstTeacher):
        def __init__(self):
            super().__init__(0.0)
            self.w = torch.zeros(2)

        def state(self):
            return {"w": self.w}

        def load_state(self, state):
            self.w = state["w"]

    s = Stateful()
    router = RoutedTeacher({"a": ConstTeacher(0.0), "b": s})
    assert set(router.state()) == {"1.w"}
    router.load_state({"1.w": torch.ones(2)})
    assert s.w.tolist() == [1.0, 1.0]
