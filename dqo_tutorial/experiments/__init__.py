"""The experiments: DQO's claims tested on the toy task, and the credit-assignment studies.

The toy-claims study (``dqo-tutorial experiment toy-claims``; its protocol is :mod:`.plan`'s
docstring), in its parts, each importing only those listed after it:

- :mod:`.plan` — the study as a graph of resumable jobs, run on the workers and written out
  (``results.json``, ``results.md``, the plots), and ``--resummarize``;
- :mod:`.jobs` — what a worker process runs (a seed's data, its relabellings, the horizon
  sweep's π_ref, one training and its evaluations) and the scheduler of the job graph;
- :mod:`.plots` — the figures;
- :mod:`.config` — :class:`~.config.ClaimsConfig`, the smoke sizes, which sampled rows a variant
  trains on and which tuning trial each method keeps;
- :mod:`.sweeps` — the horizon and data-size sweeps read per point, and their table;
- :mod:`.variants` — the rows of the comparison (:data:`~.variants.VARIANTS`) and the named sets
  of ``--variants``;
- :mod:`.tables` — the markdown tables of every variant and of the tuning budgets;
- :mod:`.stats` — paired intervals over seeds × problems and the per-variant summary.

Beside it: :mod:`.credit` — credit assignment across a toy-claims study's seeds
(``dqo-tutorial credit --study``), and :mod:`.critic_alone` — DQO's critic trained alone
(``dqo-tutorial experiment critic-alone``).
"""
