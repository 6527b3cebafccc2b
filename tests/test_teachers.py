"""Composite teachers (routing by task tag, log-linear pooling, best-of) and the core teacher kinds."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import unified_opd as uo
from unified_opd.errors import ConfigError, UserError
from unified_opd.self_teachers import EmaTeacher, ema_update
from unified_opd.teacher_config import TeacherConfig, check_replaced_keys
from unified_opd.teacher_kinds import TeacherContext, build_reference, build_teacher, check_teacher
from unified_opd.teachers import BestOfTeacher, ConfidencePooledTeacher, PooledTeacher, RoutedTeacher, merge_distributions


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


# ------------------------------------------------------------------ core teacher kinds


class ModuleTeacher(uo.Teacher):
    """Gaussian mean = the module's single weight, for every trajectory."""

    def __init__(self, module):
        self.module = module

    def distribution(self, rollout):
        return uo.Gaussian(self.module.weight.detach().expand(rollout.batch_size, rollout.loss_mask.shape[1], 1), 1.0)


class Source:
    """A minimal `TeacherSource`: models are `ConstTeacher(float(path))`, loads counted."""

    domain = "toy"

    def __init__(self):
        self.loads = []

    def load(self, path, field):
        self.loads.append((path, field))
        return ConstTeacher(float(path))

    def view_of(self, module, field):
        return ModuleTeacher(module)


class ToyPolicy:
    def __init__(self):
        self.module = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.module.weight, 2.0)


def context(source=None, **teacher):
    cfg = OmegaConf.create({"teacher": OmegaConf.structured(TeacherConfig(**teacher))})
    return TeacherContext(cfg, ToyPolicy(), source or Source())


def test_ema_update_on_a_tensor_and_on_sequences():
    t = torch.tensor([1.0, 2.0])
    ema_update(t, torch.tensor([3.0, -2.0]), 0.75)
    assert torch.allclose(t, torch.tensor([1.5, 1.0]))
    ts = [torch.tensor([1.0]), torch.tensor([0.0])]
    ema_update(ts, [torch.tensor([5.0]), torch.tensor([4.0])], 0.5)
    assert [x.item() for x in ts] == [3.0, 2.0]


def test_router_loads_each_path_once_and_routes_unrouted_tags_to_the_path():
    ctx = context(kind="router", experts={"a": "10", "b": "20"}, path="10")
    built = build_teacher(ctx)
    assert [p for p, _ in ctx.source.loads] == ["10", "20"]  # "10" is a route and the default: one load
    d = built.teacher.distribution(rollout(["a", "b", "zzz"]))
    assert d.mean[:, 0, 0].tolist() == [10.0, 21.0, 12.0]


def test_source_routes_replace_the_mapping():
    class Routed(Source):
        def routes(self, t):
            return {"x": ("30", "teacher.experts[0].path")}

    built = build_teacher(context(Routed(), kind="router", experts={"unused": "1"}))
    assert built.teacher.distribution(rollout(["x"])).mean[0, 0, 0].item() == 30.0


def test_pool_weights_default_to_equal_and_confidence_rule():
    built = build_teacher(context(kind="pool", members=["0", "4"]))
    assert built.teacher.weights == [0.5, 0.5]
    conf = build_teacher(context(kind="pool", members=["0", "4"], pool_rule="confidence"))
    assert isinstance(conf.teacher, ConfidencePooledTeacher)


def test_self_teacher_live_ema_and_frozen_reference():
    ctx = context(kind="self", reference="student")
    live = build_teacher(ctx).teacher
    assert isinstance(live, ModuleTeacher) and live.module is ctx.policy.module and live.module.weight.requires_grad
    ref = build_reference(ctx)
    with torch.no_grad():
        ctx.policy.module.weight.fill_(6.0)
    assert ref.module.weight.item() == 2.0 and not ref.module.weight.requires_grad  # a frozen copy
    frozen = build_teacher(context(kind="self", ema=1.0)).teacher
    assert isinstance(frozen, ModuleTeacher) and not frozen.module.weight.requires_grad and frozen.state() is None
    ema = build_teacher(context(kind="self", ema=0.75)).teacher
    assert isinstance(ema, EmaTeacher) and ema.copy.weight.item() == 2.0
    policy = ToyPolicy()
    with torch.no_grad():
        policy.module.weight.fill_(6.0)
    ema.after_step(policy)
    assert ema.distribution(rollout(["a"])).mean[0, 0, 0].item() == 3.0  # 0.75·2 + 0.25·6
    state = {k: v.clone() for k, v in ema.state().items()}
    fresh = build_teacher(context(kind="self", ema=0.75)).teacher
    fresh.load_state(state)
    assert fresh.copy.weight.item() == 3.0


def test_reference_path_is_loaded_through_the_source_and_memoised():
    ctx = context(kind="model", path="7", reference="7")
    built = build_teacher(ctx)
    assert build_reference(ctx) is built.teacher is built.model and len(ctx.source.loads) == 1
    assert build_reference(context()) is None


@pytest.mark.parametrize(
    "teacher, message",
    [
        ({"kind": "nope"}, "teacher.kind: unknown teacher kind 'nope'"),
        ({"kind": "model"}, "teacher.path: required by teacher.kind=model"),
        ({"kind": "router"}, "teacher.experts: required by teacher.kind=router"),
        ({"kind": "pool"}, "teacher.members: required by teacher.kind=pool"),
        ({"kind": "self", "ema": 1.5}, "teacher.ema: expected 0"),
        ({"kind": "pool", "members": ["1", "2"], "weights": [1.0]}, "teacher.weights: need one weight per member"),
        ({"kind": "pool", "members": ["1"], "pool_rule": "max"}, "teacher.pool_rule"),
        ({"kind": "self", "select": "best"}, "teacher.select"),
        ({"kind": "best_of", "members": ["1"]}, "teacher.kind: 'best_of' is not available in the toy domain"),
    ],
)
def test_check_teacher_names_the_field_before_any_load(teacher, message):
    ctx = context(**{"path": None, **teacher}) if teacher["kind"] != "nope" else None
    cfg = OmegaConf.structured(TeacherConfig(**teacher))
    with pytest.raises(ConfigError, match=message):
        check_teacher(cfg, Source)
    if ctx is not None:
        with pytest.raises(ConfigError, match=message):
            build_teacher(ctx)
        assert ctx.source.loads == []


def test_replaced_keys_name_the_new_key():
    section = OmegaConf.create({"combine": "pool", "other": None})
    with pytest.raises(ConfigError, match="teacher.combine was replaced by teacher.kind: router|pool"):
        check_replaced_keys(section, "teacher", {"other": "x", "combine": "teacher.kind: router|pool"})


def test_best_of_routes_each_prompt_to_the_scorers_choice_and_caches_it():
    calls = []

    def score(members, records):
        calls.append([r["p"] for r in records])
        good = torch.tensor([[1.0 if r["p"] == "q1" else 0.0, 0.0] for r in records])
        return good, torch.tensor([[0.0, 1.0]] * len(records))

    t = BestOfTeacher([ConstTeacher(10.0), ConstTeacher(20.0)], score, key=lambda r: r["p"])
    r = rollout(["", "", ""])
    r.meta["records"] = [{"p": "q1"}, {"p": "q2"}, {"p": "q1"}]
    assert t.distribution(r).mean[:, 0, 0].tolist() == [10.0, 21.0, 12.0]
    t.distribution(r)
    assert calls == [["q1", "q2"]]  # one scoring per prompt, cached afterwards
