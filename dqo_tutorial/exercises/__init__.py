r"""Checkers of the course exercises: your function against the reference, on random inputs.

Each ``check_<name>(fn)`` calls ``fn`` and the package's reference on the same random inputs
(20 by default, seeded, each input a fresh copy so ``fn`` cannot spoil the reference), prints a
verdict and returns it as a :class:`Verdict`:

- ``✓ lambda_return matches the reference on 20 random inputs``
- ``✗ lambda_return differs on input 3 …: at index (1, 4) yours 0.5 vs reference 0.25, …``
- ``… lambda_return: not implemented yet (raises NotImplementedError)``
- ``✗ lambda_return raised TypeError on input 0: …``

A checker never raises because of the function it checks. The references are the package's
kernels where one exists (``kernels.lambda_return``, ``kernels.dro_loss``, ``tabular.solve`` …),
so an exercise can never drift from the code the course teaches.

===============================  ========  =====================================================
checker                          notebook  the function you write
===============================  ========  =====================================================
``check_sequence_logprob``       01        log π(y|x) = Σ_h log π(a_h|s_h) per row, (B, T) → (B,)
``check_outcome_rewards``        01        sparse reward: R at each row's last action, (B, T)
``check_soft_value``             02        V(s) = β log Σ_a π_ref(a|s) exp(Q(s,a)/β)
``check_backward_induction``     02        V* of a ``tabular.TreeMDP`` by backward induction
``check_q_from_lm``              03        Q = β·(log π_θ − log π_ref) + V
``check_dro_loss``               03        mean ½ (r − V(x) − β log π_θ(y|x)/π_ref(y|x))²
``check_one_step_residual``      04        δ_h = V(s_h) + β ρ_h − r_h − V(s_{h+1})
``check_value_loss``             04        token mean of ½ (V + β ρ − r − T)²
``check_lambda_return``          05        G_h by the backward recursion of method §4
``check_reverse_discounted_sum`` 05        G_h = Σ_{l≥h} λ^{l−h} y_l, vectorised
``check_tempered_logprobs``      06        log μ(a|s) = log softmax(z/τ)[a]
``check_prefix_weights``         06        w_h = min(c, exp Σ_{l<h} (log π_θ − log μ))
``check_process_rewards``        07        shaping α(Φ(s_{h+1}) − Φ(s_h)) at step boundaries
``check_shaped_rewards``         07        r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h)), Φ(terminal) = 0
``check_accuracy_with_stderr``   08        accuracy p and its standard error √(p(1−p)/N)
``check_dpo_loss``               08        −log σ(β[(log-ratio chosen) − (log-ratio rejected)])
``check_strict_grading``         09        GSM8K: the number after the last ``####`` = gold?
``check_flexible_grading``       09        GSM8K: strict answer, else the last number = gold?
``check_step_value_changes``     10        ΔV over each reasoning step of a response
``check_advantage``              10        Â_h = β ρ_h − δ^λ_h = r_h + T_{h+1} − V(s_h)
===============================  ========  =====================================================
"""

from ._core import N_INPUTS, Verdict, check_function, mismatch, random_mask
from .ch01 import check_outcome_rewards, check_sequence_logprob
from .ch02 import check_backward_induction, check_soft_value
from .ch03 import check_dro_loss, check_q_from_lm
from .ch04 import check_one_step_residual, check_value_loss
from .ch05 import check_lambda_return, check_reverse_discounted_sum
from .ch06 import check_prefix_weights, check_tempered_logprobs
from .ch07 import check_process_rewards, check_shaped_rewards
from .ch08 import check_accuracy_with_stderr, check_dpo_loss
from .ch09 import check_flexible_grading, check_strict_grading
from .ch10 import check_advantage, check_step_value_changes

__all__ = [
    "N_INPUTS",
    "Verdict",
    "mismatch",
    "check_function",
    "random_mask",
    "check_sequence_logprob",
    "check_outcome_rewards",
    "check_soft_value",
    "check_backward_induction",
    "check_q_from_lm",
    "check_dro_loss",
    "check_one_step_residual",
    "check_value_loss",
    "check_lambda_return",
    "check_reverse_discounted_sum",
    "check_tempered_logprobs",
    "check_prefix_weights",
    "check_process_rewards",
    "check_shaped_rewards",
    "check_accuracy_with_stderr",
    "check_dpo_loss",
    "check_strict_grading",
    "check_flexible_grading",
    "check_step_value_changes",
    "check_advantage",
]
