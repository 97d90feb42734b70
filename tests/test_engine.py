"""The trainer's engine where CPU defaults never go: fp16 loss scaling with two optimisers.

DRO and DQO step two models (policy and value), each with its own optimiser, under *one* loss
scaler. The order GradScaler documents for several optimisers is: unscale each optimiser once,
clip, step each, update the scale once. These tests drive :func:`dqo_tutorial.train.optimizer_step`
with a real ``torch.amp.GradScaler`` on the CPU (Accelerate creates one only on accelerators, so
the test hands it to a CPU Accelerator) and compare every update with the one computed from the
unscaled gradients by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dqo_tutorial.train import optimizer_step


def fp16_accelerator(monkeypatch, init_scale: float = 2.0**16):
    """A CPU Accelerator with two prepared models that then behaves like an fp16 one: a real
    GradScaler scales the loss in ``backward`` and ``unscale_gradients`` / ``clip_grad_norm_``
    unscale through it. (The forward passes stay float32, so the hand-computed gradients are
    exact: the test is about the scaling, not fp16 rounding.)"""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, mixed_precision="no")
    prepared = two_models(acc)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=2)
    monkeypatch.setattr(acc, "scaler", scaler)
    for opt in prepared[1]:  # what AcceleratedOptimizer(..., scaler=scaler) would have set up
        opt.__setstate__({"scaler": scaler})
    monkeypatch.setattr(acc, "native_amp", True)
    monkeypatch.setattr(type(acc), "mixed_precision", property(lambda self: "fp16"))
    return acc, *prepared


def two_models(acc, lr: float = 1.0):
    """Policy- and value-like models with SGD (the update is −lr × the clipped gradient, so a
    gradient divided by the scale twice shows up 65,536× too small) and constant schedules."""
    torch.manual_seed(0)
    models = [nn.Linear(3, 2), nn.Linear(3, 1)]
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in models]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in opts]
    prepared = acc.prepare(*models, *opts)
    return list(prepared[:2]), list(prepared[2:]), scheds


def loss_of(models, x):
    return models[0](x).square().sum() + 3 * models[1](x).sum()


def reference_grads(models, x):
    """The true (unscaled) gradients of the same loss, by a plain backward pass."""
    clones = [type(m)(m.in_features, m.out_features) for m in models]
    for c, m in zip(clones, models):
        c.load_state_dict(m.state_dict())
    loss_of(clones, x).backward()
    return [[p.grad.clone() for p in c.parameters()] for c in clones]


def test_two_optimisers_under_one_scaler_see_their_true_gradients(monkeypatch):
    acc, models, opts, scheds = fp16_accelerator(monkeypatch)
    x = torch.randn(5, 3)
    expected = reference_grads(models, x)
    before = [[p.detach().clone() for p in m.parameters()] for m in models]
    acc.backward(loss_of(models, x))  # the scaled loss: grads are 65,536× the true ones

    norms, skipped = optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=1e9)

    assert not skipped
    for m, b, g, n in zip(models, before, expected, norms):
        true_norm = torch.linalg.vector_norm(torch.cat([t.flatten() for t in g]))
        assert n == pytest.approx(float(true_norm), rel=1e-6)  # the norm of the true gradient
        for p, p0, gp in zip(m.parameters(), b, g):
            torch.testing.assert_close(p.detach(), p0 - gp, rtol=1e-6, atol=1e-6)
    # one update of the scale per step (growth_interval 2: a second update would grow it)
    assert acc.scaler.get_scale() == 2.0**16
    assert acc.scaler._get_growth_tracker() == 1
    assert [s.get_last_lr()[0] for s in scheds] == [0.5, 0.5]  # each schedule stepped once


def test_clipping_uses_each_models_own_true_norm(monkeypatch):
    acc, models, opts, scheds = fp16_accelerator(monkeypatch)
    x = torch.randn(5, 3)
    expected = reference_grads(models, x)
    before = [[p.detach().clone() for p in m.parameters()] for m in models]
    acc.backward(loss_of(models, x))
    optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=0.5)
    for m, b, g in zip(models, before, expected):
        norm = float(torch.linalg.vector_norm(torch.cat([t.flatten() for t in g])))
        scale = min(1.0, 0.5 / (norm + 1e-6))
        for p, p0, gp in zip(m.parameters(), b, g):
            torch.testing.assert_close(p.detach(), p0 - scale * gp, rtol=1e-5, atol=1e-6)


def test_an_overflow_skips_the_whole_step_and_halves_the_scale_once(monkeypatch):
    acc, models, opts, scheds = fp16_accelerator(monkeypatch)
    x = torch.randn(5, 3)
    acc.backward(loss_of(models, x))
    next(models[1].parameters()).grad[0, 0] = math.inf  # the value model overflows
    before = [[p.detach().clone() for p in m.parameters()] for m in models]

    _, skipped = optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=1.0)

    assert skipped
    for m, b in zip(models, before):  # neither model moves ...
        for p, p0 in zip(m.parameters(), b):
            assert torch.equal(p.detach(), p0)
    assert [s.get_last_lr()[0] for s in scheds] == [1.0, 1.0]  # ... nor any schedule
    assert acc.scaler.get_scale() == 2.0**15


def test_without_a_scaler_the_step_is_plain_clip_and_step():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, mixed_precision="no")
    models, opts, scheds = two_models(acc)
    x = torch.randn(5, 3)
    expected = reference_grads(models, x)
    before = [[p.detach().clone() for p in m.parameters()] for m in models]
    acc.backward(loss_of(models, x))
    _, skipped = optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=1e9)
    assert not skipped
    for m, b, g in zip(models, before, expected):
        for p, p0, gp in zip(m.parameters(), b, g):
            torch.testing.assert_close(p.detach(), p0 - gp)
