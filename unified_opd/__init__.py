"""unified_opd: on-policy distillation across text, vision, diffusion and agents.

The public API (stable; see README):

    import unified_opd as uo
    s = uo.Categorical.from_logits(student_logits); t = uo.Categorical.from_logits(teacher_logits)
    uo.divergence("reverse_kl")(s, t)                 # one value per position, nats
    uo.Categorical.from_hidden(hidden, weight)        # lazy, chunked over the vocabulary
    uo.Categorical.from_topk(logprobs, indices, V)    # sparse teacher: top-k + tail
    uo.divergence("kl")(uo.Gaussian(m1, s1), uo.Gaussian(m2, s2))
    uo.pool([d1, d2], [w1, w2])                       # log-linear pooling
"""

from .distributions import Categorical, Distribution, Gaussian, pool
from .divergences import DIVERGENCES, Divergence, divergence
from .domain import DOMAINS, Components, register_domain
from .errors import ConfigError, UserError
from .estimators import opd_advantage, policy_gradient_loss
from .interfaces import Policy, Teacher
from .objective import Objective
from .rollout import Rollout
from .weights import WEIGHTS, WeightInputs

__all__ = [
    "Categorical",
    "Components",
    "ConfigError",
    "DIVERGENCES",
    "DOMAINS",
    "Distribution",
    "Divergence",
    "Gaussian",
    "Objective",
    "Policy",
    "Rollout",
    "Teacher",
    "UserError",
    "WEIGHTS",
    "WeightInputs",
    "divergence",
    "opd_advantage",
    "policy_gradient_loss",
    "pool",
    "register_domain",
]
__version__ = "0.1.0"
