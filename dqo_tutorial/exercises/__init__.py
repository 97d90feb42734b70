r"""Checkers of the course exercises: your function against the reference, on random inputs.

Each ``check_<name>(fn)`` calls ``fn`` and the package's reference on the same random inputs
(20 by default, seeded, each input a fresh copy so ``fn`` cannot spoil the reference), prints a
verdict and returns it as a :class:`Verdict`:

- ``✓ lambda_return matches the reference on 20 random inputs``
- ``✗ lambda_return differs on input 3 …: at index (1, 4) yours 0.5 vs reference 0.25, …``
- ``… lambda_return: not implemented yet (raises NotImplementedError)``
- ``✗ lambda_return raised TypeError on input 0: …`` and the line of your code that raised

A wrong answer that equals one of the slips the exercise's text names (a :class:`Slip`,
recognised by computing the slip's own answer on the same input) gets that slip's message, and
the verdict keeps the failing case: ``fn(*args, **kwargs)`` with ``args, kwargs =
verdict.inputs`` reproduces it, ``verdict.expected`` is the reference's answer, ``verdict.got``
yours.

A checker never raises because of the function it checks. The references are the package's
kernels where one exists (``kernels.lambda_return``, ``kernels.dro_loss``, ``tabular.solve`` …),
so an exercise can never drift from the code the course teaches.

Each notebook's checkers live in their own module, ``ch01`` … ``ch10``, whose docstring
lists them with the function each one expects; this package gathers them all, so a notebook
writes ``exercises.check_<name>``. A checker takes ``seed=`` (the hidden tests of an
assignment use another one) and fails a function that calls the package's own version of
what the exercise asks for (see :func:`check_function`).
"""

from importlib import import_module

from ._core import N_INPUTS, Slip, Verdict, check_function, mismatch, random_mask

CHAPTERS = ("ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09", "ch10")

__all__ = ["N_INPUTS", "Slip", "Verdict", "mismatch", "check_function", "random_mask"]
for _name in CHAPTERS:
    _module = import_module(f".{_name}", __name__)
    globals().update({k: getattr(_module, k) for k in _module.__all__})
    __all__ += list(_module.__all__)
del _name, _module
