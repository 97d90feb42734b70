r"""A finite tree MDP with its exact soft-optimal solution: the ground truth of DQO.

Symbols are those of ``docs/dqo-method.md``. Generation is a token-level MDP over a vocabulary of
K tokens, one of which is EOS. A state is a prefix s_h = (a_1 … a_{h-1}) (the prompt x is implicit
and shared); the transition is concatenation s_{h+1} = s_h ∘ a_h. An episode ends after EOS or after
H actions; the state reached then is terminal (V = 0 there) and is not stored. Every stored state is
a prefix of length < H with no EOS, indexed breadth-first (root = 0, parents before children), so
that every table is an (n_states, K) or (n_states,) float64 tensor.

==========================================  ========================================================
name                                        what it is
==========================================  ========================================================
``TreeMDP``                                 states, ``ref_logp`` = log π_ref (n_states, K),
                                            ``reward`` = r(s, a) (n_states, K), ``next_state``
                                            (row of s ∘ a, −1 if terminal), ``index`` (prefix → row)
``TreeMDP.random(K, H, seed=…)``            random π_ref (softmax of Gaussian logits), outcome
                                            reward on terminal transitions (a binary "correct
                                            answer" set, or uniform in [0, 1]), optional process
                                            rewards on the other transitions
``TreeMDP.shaped(phi, alpha)``              the same MDP with potential-based shaping (method §6)
``solve(mdp, beta) -> SoftSolution``        Q*, V*, π*, log π* by backward induction (method §2)
``enumerate_trajectories(mdp)``             every complete trajectory, as tuples of token ids
``sample_trajectories(mdp, pi, n, seed)``   n complete trajectories drawn from a policy table
``to_batch(mdp, trajectories) -> Batch``    right-padded, action-aligned (B, T) tensors (§7)
``Batch.gather(table)``                     (n_states, K) → e.g. log π(a_h|s_h); (n_states,) →
                                            V(s_h); (B, T), 0 off-mask
``Batch.bootstrap(v)``                      (B,) b: 0 for terminal rows, V(s_{H+1}) for cut rows
``Batch.coverage(mdp)``                     (n_states, K) bool: the (s, a) pairs in the data
``train_tabular_dqo(mdp, beta, batch)``     tabular π_θ, V_φ trained with ``kernels.dqo_loss``
``demo(out_dir)``                           the ``tabular-demo`` command: table + PNG of errors
==========================================  ========================================================

The same ``Batch.gather`` serves the exact tables (``sol.log_pi``, ``sol.v``) and the trainable
ones (``log_softmax(logits)``, ``v``), so kernels see both through identical (B, T) tensors.

A trajectory tuple that is neither EOS-terminated nor of length H is a row *cut by the length
limit*: :func:`to_batch` marks it non-terminal and :meth:`Batch.bootstrap` bootstraps it.

Example::

    mdp = TreeMDP.random(vocab_size=3, horizon=3, seed=0)
    sol = solve(mdp, beta=0.5)
    batch = to_batch(mdp, sample_trajectories(mdp, mdp.ref_logp.exp(), n=2000, seed=0))
    res = train_tabular_dqo(mdp, 0.5, batch, lam=1.0)
    (res.pi - sol.pi).abs().max()          # < 1e-3
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from dqo_tutorial.kernels import ISMode, dqo_loss

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TreeMDP",
    "SoftSolution",
    "Batch",
    "TrainResult",
    "DemoOutput",
    "solve",
    "enumerate_trajectories",
    "sample_trajectories",
    "to_batch",
    "train_tabular_dqo",
    "demo",
]

DTYPE = torch.float64
Trajectory = tuple[int, ...]  # token ids: a prefix (= a state) or a whole trajectory


# --------------------------------------------------------------------------------------------
# the MDP
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TreeMDP:
    r"""Token tree MDP: K tokens (``eos`` among them), horizon H, π_ref and r as tables.

    ==============  ===============  ========================================================
    field           shape            meaning
    ==============  ===============  ========================================================
    states          n_states tuples  prefixes s = (a_1 … a_{h-1}), h ≤ H, no EOS; BFS order
    ref_logp        (n_states, K)    log π_ref(a|s)
    reward          (n_states, K)    r(s, a): outcome on terminal transitions, process
                                     reward (default 0) elsewhere
    ==============  ===============  ========================================================

    Derived: ``index`` (prefix → row), ``next_state`` (n_states, K) long, the row of s ∘ a or −1
    when s ∘ a is terminal (a = EOS or |s| + 1 = H), ``depth`` (n_states,) = |s|.
    """

    vocab_size: int
    horizon: int
    eos: int
    states: tuple[Trajectory, ...]
    ref_logp: Tensor
    reward: Tensor
    index: dict[Trajectory, int] = field(init=False, repr=False)
    next_state: Tensor = field(init=False, repr=False)
    depth: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = {s: i for i, s in enumerate(self.states)}
        nxt = [[index.get(s + (a,), -1) for a in range(self.vocab_size)] for s in self.states]
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "next_state", torch.tensor(nxt, dtype=torch.long))
        object.__setattr__(self, "depth", torch.tensor([len(s) for s in self.states]))

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def bos(self) -> int:
        """Token id of the one-token prompt column (and of padding): K, outside the actions."""
        return self.vocab_size

    def is_terminal(self, prefix: Trajectory) -> bool:
        """A prefix is terminal once it ends with EOS or holds H actions."""
        return len(prefix) == self.horizon or (len(prefix) > 0 and prefix[-1] == self.eos)

    @classmethod
    def random(
        cls,
        vocab_size: int = 3,
        horizon: int = 3,
        *,
        seed: int = 0,
        eos: int = 0,
        ref_scale: float = 0.5,
        outcome: Literal["binary", "uniform"] = "binary",
        p_correct: float = 0.3,
        process_scale: float = 0.0,
    ) -> TreeMDP:
        r"""A random instance.

        π_ref(·|s) = softmax(ref_scale · z_s), z_s ~ N(0, I_K). The outcome reward of a terminal
        transition is 1 for a random "correct answer" set of terminal sequences (each one correct
        with probability ``p_correct``, at least one correct) or ~ U[0, 1] (``uniform``). Each
        non-terminal transition gets a process reward ``process_scale`` · N(0, 1) (0 by default).
        """
        if vocab_size < 2 or horizon < 1:
            raise ValueError("need vocab_size >= 2 (EOS + one token) and horizon >= 1")
        gen = torch.Generator().manual_seed(seed)
        tokens = [a for a in range(vocab_size) if a != eos]
        states = tuple(s for d in range(horizon) for s in itertools.product(tokens, repeat=d))
        shape = (len(states), vocab_size)
        ref_logp = torch.log_softmax(ref_scale * torch.randn(shape, generator=gen, dtype=DTYPE), -1)
        terminal = torch.tensor(
            [[a == eos or len(s) + 1 == horizon for a in range(vocab_size)] for s in states]
        )
        if outcome == "binary":
            draw = torch.rand(shape, generator=gen, dtype=DTYPE)
            correct = terminal & (draw < p_correct)
            if not correct.any():
                correct.view(-1)[torch.where(terminal.view(-1), draw.view(-1), 2.0).argmin()] = True
            out = correct.to(DTYPE)
        elif outcome == "uniform":
            out = torch.rand(shape, generator=gen, dtype=DTYPE)
        else:
            raise ValueError(f"outcome must be 'binary' or 'uniform', got {outcome!r}")
        process = process_scale * torch.randn(shape, generator=gen, dtype=DTYPE)
        reward = torch.where(terminal, out, process)
        return cls(vocab_size, horizon, eos, states, ref_logp, reward)

    def shaped(self, phi: Tensor, alpha: float) -> TreeMDP:
        r"""Potential-based shaping (method §6):  r'(s, a) = r(s, a) + α·(Φ(s ∘ a) − Φ(s)).

        ``phi`` is Φ on the stored states (n_states,); Φ(terminal) = 0, which is what makes the
        shaping telescope to −α·Φ(root) on every complete trajectory. Then
        Q'* = Q* − α·Φ(s), V'* = V* − α·Φ(s) and π'* = π* (same optimal policy).
        """
        phi = phi.to(DTYPE)
        phi_next = torch.where(self.next_state >= 0, phi[self.next_state.clamp(min=0)], 0.0)
        reward = self.reward + alpha * (phi_next - phi[:, None])
        return TreeMDP(self.vocab_size, self.horizon, self.eos, self.states, self.ref_logp, reward)


# --------------------------------------------------------------------------------------------
# exact soft-optimal solution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftSolution:
    r"""Q* (n_states, K), V* (n_states,), π* and log π* (n_states, K) for one β."""

    beta: float
    q: Tensor
    v: Tensor
    pi: Tensor
    log_pi: Tensor


def solve(mdp: TreeMDP, beta: float) -> SoftSolution:
    r"""Exact soft-optimal tables by backward induction over depth (method §2).

    .. math::
        Q^*(s,a) &= r(s,a) + V^*(s \circ a), \qquad V^*(\text{terminal}) = 0 \\
        V^*(s)   &= \beta \log \textstyle\sum_a \pi_{\rm ref}(a|s)\, e^{Q^*(s,a)/\beta}
                  \quad\text{(logsumexp of } \log\pi_{\rm ref} + Q^*/\beta) \\
        \log\pi^*(a|s) &= \log\pi_{\rm ref}(a|s) + \bigl(Q^*(s,a) - V^*(s)\bigr)/\beta
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    q = torch.zeros_like(mdp.reward)
    v = torch.zeros(mdp.n_states, dtype=DTYPE)
    nxt = mdp.next_state
    for d in range(mdp.horizon - 1, -1, -1):
        rows = (mdp.depth == d).nonzero().squeeze(1)
        v_next = torch.where(nxt[rows] >= 0, v[nxt[rows].clamp(min=0)], 0.0)
        q[rows] = mdp.reward[rows] + v_next
        v[rows] = beta * torch.logsumexp(mdp.ref_logp[rows] + q[rows] / beta, dim=-1)
    log_pi = mdp.ref_logp + (q - v[:, None]) / beta
    return SoftSolution(beta, q, v, log_pi.exp(), log_pi)


# --------------------------------------------------------------------------------------------
# trajectories and batches (method §7)
# --------------------------------------------------------------------------------------------


def enumerate_trajectories(mdp: TreeMDP) -> list[Trajectory]:
    """Every complete trajectory (a terminal prefix), depth-first in token order."""

    def walk(prefix: Trajectory) -> list[Trajectory]:
        if mdp.is_terminal(prefix):
            return [prefix]
        return [t for a in range(mdp.vocab_size) for t in walk(prefix + (a,))]

    return walk(())


def sample_trajectories(mdp: TreeMDP, policy: Tensor, n: int, seed: int) -> list[Trajectory]:
    """``n`` complete trajectories with a_h ~ policy[s_h] ((n_states, K) probabilities)."""
    gen = torch.Generator().manual_seed(seed)
    state = torch.zeros(n, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    steps = []
    for _ in range(mdp.horizon):
        a = torch.multinomial(policy[state], 1, generator=gen).squeeze(1)
        steps.append(torch.where(alive, a, -1))
        nxt = mdp.next_state[state, a]
        alive &= nxt >= 0
        state = nxt.clamp(min=0)
    cols = torch.stack(steps, 1).tolist()
    return [tuple(a for a in row if a >= 0) for row in cols]


@dataclass(frozen=True)
class Batch:
    r"""Trajectories as right-padded, action-aligned (B, T) tensors; T = 1 + longest length.

    ==========  =======  ==============================================================
    field       shape    meaning
    ==========  =======  ==============================================================
    tokens      (B, T)   long; column 0 = the prompt token ``mdp.bos`` (never an action),
                         columns 1…H the actions a_1…a_H, then padding (``mdp.bos``)
    mask        (B, T)   bool action mask (1 exactly on a_1…a_H)
    state       (B, T)   long; row of s_j = tokens[:, 1:j] on action columns, 0 elsewhere
    rewards     (B, T)   r(s_j, a_j) on action columns, 0 elsewhere
    terminal    (B,)     bool; False for a row cut by the length limit
    last_state  (B,)     long; row of s_{H+1} for cut rows, 0 for terminal rows
    ==========  =======  ==============================================================
    """

    tokens: Tensor
    mask: Tensor
    state: Tensor
    rewards: Tensor
    terminal: Tensor
    last_state: Tensor

    def gather(self, table: Tensor) -> Tensor:
        """(n_states, K) table → table[s_j, a_j]; (n_states,) table → table[s_j]; 0 off-mask."""
        if table.dim() == 2:
            picked = table[self.state, torch.where(self.mask, self.tokens, 0)]
        else:
            picked = table[self.state]
        return torch.where(self.mask, picked, torch.zeros((), dtype=table.dtype))

    def bootstrap(self, v: Tensor) -> Tensor:
        """b = V(s_{H+1}) for rows cut by the length limit, 0 for terminal rows; (B,)."""
        return torch.where(self.terminal, torch.zeros((), dtype=v.dtype), v[self.last_state])

    def coverage(self, mdp: TreeMDP) -> Tensor:
        """(n_states, K) bool: the (s, a) pairs that occur as an action in the batch."""
        seen = torch.zeros(mdp.n_states * mdp.vocab_size, dtype=torch.bool)
        seen[(self.state * mdp.vocab_size + self.tokens)[self.mask]] = True
        return seen.view(mdp.n_states, mdp.vocab_size)


def to_batch(mdp: TreeMDP, trajectories: list[Trajectory]) -> Batch:
    """Right-padded (B, T) tensors (see :class:`Batch`) of trajectories (tuples of token ids)."""
    width = 1 + max(len(t) for t in trajectories)
    n = len(trajectories)
    tokens = torch.full((n, width), mdp.bos, dtype=torch.long)
    state = torch.zeros((n, width), dtype=torch.long)
    last = torch.zeros(n, dtype=torch.long)
    terminal = torch.ones(n, dtype=torch.bool)
    for b, traj in enumerate(trajectories):
        for j in range(1, len(traj) + 1):
            tokens[b, j] = traj[j - 1]
            state[b, j] = mdp.index[traj[: j - 1]]
        if not mdp.is_terminal(traj):
            terminal[b], last[b] = False, mdp.index[traj]
    batch = Batch(
        tokens, tokens != mdp.bos, state, torch.zeros(n, width, dtype=DTYPE), terminal, last
    )
    return replace(batch, rewards=batch.gather(mdp.reward))


# --------------------------------------------------------------------------------------------
# tabular DQO
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    r"""Learned tables and the training curve.

    ``logits`` (n_states, K): π_θ = softmax(logits); ``v`` (n_states,): V_φ; ``pi`` = π_θ.
    ``history`` maps ``step``, ``policy_loss``, ``value_loss``, ``pi_err`` = max|π_θ − π*|,
    ``v_err`` = max|V_φ − V*| (π*, V* of the β used in the loss) to per-record lists;
    ``seconds`` is the wall time of the training loop.
    """

    logits: Tensor
    v: Tensor
    pi: Tensor
    history: dict[str, list[float]]
    seconds: float


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch single-threaded: on (n_states, K) tables intra-op threads only add sync cost
    (and under CPU contention made the training loop ~50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_tabular_dqo(
    mdp: TreeMDP,
    beta: float,
    batch: Batch,
    *,
    lam: float = 1.0,
    steps: int = 1000,
    lr_policy: float = 0.05,
    lr_value: float = 0.1,
    warmup: int = 50,
    is_mode: ISMode = "prefix",
    is_clip: float = 2.0,
    behavior_logp: Tensor | None = None,
    log_every: int = 10,
) -> TrainResult:
    r"""Tabular DQO: free logits table for π_θ (init log π_ref), free table V_φ (init 0).

    One full-batch Adam step per iteration on ``kernels.dqo_loss`` (which keeps the gradient paths
    apart: L_π reaches only θ, L_V only φ), with learning rates cosine-annealed to 0:

    .. math::
        \min_\theta L_\pi + \min_\phi L_V, \qquad
        \delta^\lambda_h = V_\phi(s_h) + \beta\log\frac{\pi_\theta(a_h|s_h)}{\pi_{\rm ref}(a_h|s_h)}
                           - r_h - T_{h+1}

    The first ``warmup`` steps update V_φ only (method §8). ``behavior_logp`` is the table
    log μ of the policy that sampled ``batch`` (default π_ref) and feeds the IS weights. Adam
    uses β₂ = 0.99: prefix IS weights ∏_{l<h} π_θ/μ of states that π_θ moves away from keep
    shrinking, and a long second-moment memory then stalls their updates.

    Every (s, a) pair must occur in the data (else π* is not identified; ``ValueError``). At π*,
    V* every λ-residual is 0 on any trajectory (path consistency), so the minimum loss is 0; with
    full coverage π*, V* is the only fixed point, for every λ and IS mode (the weights of a tree
    state are the same for all its samples). Measured with the defaults (β ∈ {0.5, 1}, K ≤ 4,
    H ≤ 4, λ ∈ {0, 0.5, 1}, IS none/prefix): max|π_θ − π*| and max|V_φ − V*| < 1e-3 within 450 steps
    and < 1e-10 at step 1000 (about 1 s on CPU). Small β is harder: π* is sharp, the logits must
    travel ~1/β, and at β = 0.1 with prefix IS 1000 steps are not enough.
    """
    if not batch.coverage(mdp).all():
        raise ValueError("the data must visit every (state, action) pair: sample more")
    target = solve(mdp, beta)
    logits = mdp.ref_logp.clone().requires_grad_(True)
    v = torch.zeros(mdp.n_states, dtype=DTYPE, requires_grad=True)
    groups = [{"params": [logits], "lr": lr_policy}, {"params": [v], "lr": lr_value}]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    ref_logps = batch.gather(mdp.ref_logp)
    behavior_logps = batch.gather(mdp.ref_logp if behavior_logp is None else behavior_logp)
    history: dict[str, list[float]] = {
        k: [] for k in ("step", "policy_loss", "value_loss", "pi_err", "v_err")
    }
    start = time.perf_counter()
    with _single_thread():
        for step in range(steps + 1):
            policy_loss, value_loss, _ = dqo_loss(
                batch.gather(torch.log_softmax(logits, -1)),
                ref_logps,
                batch.gather(v),
                batch.rewards,
                batch.mask,
                beta=beta,
                lam=lam,
                bootstrap=batch.bootstrap(v),
                behavior_logps=behavior_logps,
                is_mode=is_mode,
                is_clip=is_clip,
            )
            if step % log_every == 0 or step == steps:
                with torch.no_grad():
                    record = (
                        step,
                        policy_loss.item(),
                        value_loss.item(),
                        (torch.softmax(logits, -1) - target.pi).abs().max().item(),
                        (v - target.v).abs().max().item(),
                    )
                for key, val in zip(history, record, strict=True):
                    history[key].append(val)
            if step == steps:
                break
            opt.zero_grad()
            (value_loss if step < warmup else policy_loss + value_loss).backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    logits, v = logits.detach(), v.detach()
    return TrainResult(logits, v, torch.softmax(logits, -1), history, seconds)


# --------------------------------------------------------------------------------------------
# demo (the `tabular-demo` command)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOutput:
    """What :func:`demo` produced: the MDP, its exact solution, the run, the figure and its PNG."""

    mdp: TreeMDP
    solution: SoftSolution
    result: TrainResult
    figure: Figure
    png: Path


def demo(
    out_dir: str | Path,
    *,
    beta: float = 0.5,
    lam: float = 1.0,
    steps: int = 1000,
    seed: int = 0,
    vocab_size: int = 4,
    horizon: int = 3,
    n_samples: int = 4096,
    is_mode: ISMode = "prefix",
    warmup: int = 50,
    print_every: int = 100,
    tol: float = 1e-3,
) -> DemoOutput:
    r"""Train tabular DQO on samples of μ = π_ref; print the curve, save ``tabular-dqo.png``.

    The MDP is ``TreeMDP.random(vocab_size, horizon, seed=seed)``; the data are ``n_samples``
    trajectories of π_ref (seed ``seed``); errors are against :func:`solve` at the same β. The plot
    shows max|π_θ − π*|, max|V_φ − V*| and the weighted RMS residual √(2·L_V) (L_π and L_V have
    the same value, only their gradient paths differ) on a log scale.
    """
    from matplotlib.figure import Figure

    mdp = TreeMDP.random(vocab_size, horizon, seed=seed)
    sol = solve(mdp, beta)
    batch = to_batch(mdp, sample_trajectories(mdp, mdp.ref_logp.exp(), n_samples, seed))
    res = train_tabular_dqo(
        mdp,
        beta,
        batch,
        lam=lam,
        steps=steps,
        warmup=warmup,
        is_mode=is_mode,
        log_every=min(10, print_every),
    )
    h = res.history
    print(
        f"tabular DQO: K={vocab_size} H={horizon} states={mdp.n_states} "
        f"trajectories={len(batch.tokens)} beta={beta} lambda={lam} is_mode={is_mode}"
    )
    print(
        f"{'step':>6} {'policy loss':>12} {'value loss':>12} {'max|pi-pi*|':>12} {'max|V-V*|':>10}"
    )
    for i, step in enumerate(h["step"]):
        if step % print_every == 0 or step == steps:
            print(
                f"{step:>6} {h['policy_loss'][i]:>12.3e} {h['value_loss'][i]:>12.3e} "
                f"{h['pi_err'][i]:>12.3e} {h['v_err'][i]:>10.3e}"
            )
    within = [
        s for s, p, v in zip(h["step"], h["pi_err"], h["v_err"], strict=True) if max(p, v) < tol
    ]
    reached = f"both errors first < {tol:g} at step {within[0]}" if within else f"errors >= {tol:g}"
    print(f"trained {steps} steps in {res.seconds:.1f} s; {reached}")

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    floor = 1e-17  # below float64 round-off: keeps exact zeros drawable on the log scale
    rms = [math.sqrt(2 * x) for x in h["value_loss"]]
    for ys, label, style in (
        (h["pi_err"], r"max $|\pi_\theta - \pi^*|$", {}),
        (h["v_err"], r"max $|V_\phi - V^*|$", {}),
        (rms, r"RMS residual $\sqrt{2 L_V}$", {"color": "0.5", "linestyle": "--"}),
    ):
        ax.semilogy(h["step"], [max(y, floor) for y in ys], label=label, **style)
    ax.axhline(tol, color="k", linewidth=0.8, linestyle=":", label=f"tolerance {tol:g}")
    if warmup:
        ax.axvspan(0, warmup, color="0.85", label="value-only warm-up")
    ax.set_xlabel("Adam step (full batch)")
    ax.set_ylabel("error (log scale)")
    ax.set_title(
        f"Tabular DQO vs the exact soft-optimal solution\n"
        f"K={vocab_size}, H={horizon}, β={beta}, λ={lam}, IS={is_mode}, "
        f"{len(batch.tokens)} trajectories of π_ref"
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "tabular-dqo.png"
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")
    return DemoOutput(mdp, sol, res, fig, png)
