"""dqo_tutorial: Direct Q-function Optimization (DQO), a tested reference implementation and course.

Modules, one concept each:

- :mod:`dqo_tutorial.kernels`   pure tensor kernels: log-probs, λ-returns, importance weights,
  the soft-Bellman residual and the DQO / DPO / DRO losses (no model inside).
- :mod:`dqo_tutorial.modeling`  model-level plumbing: action-aligned per-token log-probs of a causal
  LM and the value model V_φ.
- :mod:`dqo_tutorial.tabular`   a finite tree MDP with the exact soft-optimal Q*, V*, π*.
"""

__version__ = "0.1.0"
