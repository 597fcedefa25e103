"""Nash-MTL — multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from deconflict.errors import SolverError, SolverWarning
from deconflict.optim._base import GramianAggregator
from deconflict.optim._registry import register

__all__ = ["NashMTL", "solve_bargaining_ccp", "solve_bargaining_newton"]


def solve_bargaining_newton(
    gram: np.ndarray, tol: float = 1e-9, max_iter: int = 100, start: np.ndarray | None = None
) -> np.ndarray:
    """Solve ``G α = 1/α`` (element-wise), ``α > 0``, exactly.

    The bargaining equation is the stationarity condition of the strictly convex function
    ``φ(α) = ½ αᵀGα − Σ_i log α_i`` on α > 0 (its gradient is Gα − 1/α), so its solution is the
    unique minimiser of φ, found here by damped Newton steps (Hessian G + diag(1/α²), positive
    definite) that stay inside α > 0, until max_i |α_i (Gα)_i − 1| < ``tol``. Raises
    :class:`SolverError` when no solution exists, e.g. when a task's gradient is zero or a
    non-negative combination of the gradients vanishes (then φ is unbounded below).
    """
    gram = np.asarray(gram, dtype=np.float64)
    diag = np.diag(gram).copy()
    if np.any(diag <= 0):
        zero = [int(i) for i in np.nonzero(diag <= 0)[0]]
        raise SolverError(f"tasks {zero} have zero gradients, so G α = 1/α has no solution")
    scale = float(diag.mean())
    g = gram / scale  # solve (G/s) a = 1/a, then α = a / √s
    a = 1.0 / np.sqrt(np.diag(g))
    if start is not None:
        candidate = np.asarray(start, dtype=np.float64) * np.sqrt(scale)
        if candidate.shape == a.shape and np.all(np.isfinite(candidate)) and np.all(candidate > 0):
            a = candidate

    def phi(x: np.ndarray) -> float:
        return 0.5 * float(x @ g @ x) - float(np.sum(np.log(x)))

    def residual_norm(x: np.ndarray) -> float:
        return float(np.max(np.abs(x * (g @ x) - 1.0)))

    for _ in range(max_iter):
        if residual_norm(a) < tol:
            return a / np.sqrt(scale)
        gradient = g @ a - 1.0 / a
        try:
            step = np.linalg.solve(g + np.diag(1.0 / a**2), gradient)
        except np.linalg.LinAlgError:  # G singular and α so large that 1/α² vanishes: unbounded
            break
        decrement = float(gradient @ step)  # Newton decrement λ²
        positive = step > 0
        t = min(1.0, 0.99 * float(np.min(a[positive] / step[positive]))) if positive.any() else 1.0
        if decrement > 1e-20:  # Armijo backtracking, except at round-off level where φ cannot resolve it
            value = phi(a)
            while t > 1e-16 and phi(a - t * step) > value - 1e-4 * t * decrement:
                t *= 0.5
        a = a - t * step
        if np.max(a) > 1e12:
            break
    if np.all(np.isfinite(a)) and np.all(a > 0) and residual_norm(a) < 1e3 * tol and np.max(a) <= 1e12:
        return a / np.sqrt(scale)  # converged to round-off, slightly above tol
    raise SolverError(
        "G α = 1/α has no positive solution (φ is unbounded below): a non-negative combination "
        "of the task gradients is (numerically) zero"
    )


def solve_bargaining_ccp(gram: np.ndarray, start: np.ndarray, optim_niter: int = 20) -> np.ndarray:
    """The official code's sequence of convex problems (concave-convex procedure), with cvxpy.

    As in ``AvivNavon/nash-mtl`` (``NashMTL._solve_optimization``): G is normalised by its
    Frobenius norm n; each iteration solves

        min_α  Σ_i (Gα)_i + ∇Φ(α_k)ᵀ(α − α_k) / n    s.t.  log(n α_i) + log((Gα)_i) ≥ 0,  α ≥ 0,

    with Φ(α) = Σ_i log α_i + log (Gα)_i linearised at the previous iterate, and stops when
    ‖Gα − 1/α‖ < 1e-3 or α stops moving. Solved with Clarabel (installed with cvxpy) instead of
    ECOS, and — unlike the official code — a failed solve raises instead of silently reusing the
    previous weights.
    """
    import cvxpy as cp

    gram = np.asarray(gram, dtype=np.float64)
    n_tasks = gram.shape[0]
    norm = float(np.linalg.norm(gram))
    if norm <= 0:
        raise SolverError("all task gradients are zero")
    g = gram / norm
    alpha_prev = np.asarray(start, dtype=np.float64)
    alpha = cp.Variable(n_tasks, nonneg=True)
    g_alpha = g @ alpha
    for _ in range(optim_niter):
        g_alpha_prev = g @ alpha_prev
        if np.any(alpha_prev <= 0) or np.any(g_alpha_prev <= 0):
            raise SolverError(
                "the official convex sub-problem is undefined at the current weights (a task's (Gα)_i ≤ 0: "
                "its gradient does not improve along Σ α_j g_j)"
            )
        gradient = 1.0 / alpha_prev + (1.0 / g_alpha_prev) @ g
        objective = cp.Minimize(cp.sum(g_alpha) + gradient @ (alpha - alpha_prev) / norm)
        constraints = [cp.log(alpha[i] * norm) + cp.log(g_alpha[i]) >= 0 for i in range(n_tasks)]
        problem = cp.Problem(objective, constraints)
        try:
            problem.solve(solver=cp.CLARABEL)
        except (cp.error.SolverError, ValueError) as error:
            raise SolverError(f"Clarabel failed on the Nash-MTL sub-problem: {error}") from None
        if problem.status not in ("optimal", "optimal_inaccurate") or alpha.value is None:
            raise SolverError(f"the Nash-MTL sub-problem ended with status {problem.status!r}")
        current = np.asarray(alpha.value, dtype=np.float64)
        converged = (
            np.linalg.norm(g @ current - 1.0 / (current + 1e-10)) < 1e-3 or np.linalg.norm(current - alpha_prev) < 1e-6
        )
        alpha_prev = current
        if converged:
            break
    return alpha_prev


@register("nashmtl", "nash")
class NashMTL(GramianAggregator):
    """Nash-MTL: the Nash bargaining solution among the tasks.

    Navon et al., *Multi-Task Learning as a Bargaining Game*, ICML 2022, Eq. (2)/Claim 3.1: the
    update is d = Σ_i α_i g_i where α > 0 solves ``GᵀG α = 1/α`` (here G has the task gradients as
    columns, so GᵀG is the Gramian J Jᵀ), i.e. α_i ⟨g_i, d⟩ = 1 for every task: each task's
    directional improvement is inversely proportional to its weight.

    Solvers:
        ``"newton"`` (default): the exact solution, as the minimiser of a strictly convex function
        (see :func:`solve_bargaining_newton`); reliable and fast.
        ``"ccp"``: the official code's sequence of convex approximations (optim_niter steps, cvxpy
        with Clarabel; see :func:`solve_bargaining_ccp`).

    The equation has no solution when a task's gradient is zero or a non-negative combination of
    the gradients vanishes (and the official convex sub-problem of ``"ccp"`` can be unbounded). The
    official code and LibMTL then silently keep the previous weights — at the first step, the
    initial α = (1, …, 1) — (and, with cvxpy ≥ 1.6 without ECOS, fail on every step without
    telling). Here ``on_failure="raise"`` raises :class:`SolverError`; ``"warn"`` (default) does
    what the official code does (the previous step's α, or the initial α = 1 at the first step)
    and emits a :class:`SolverWarning` naming the step. ``failures`` counts the fallbacks.

    **Task-specific parameters.** Used through :class:`~deconflict.train.Trainer` (or
    :func:`~deconflict.grad.multitask_backward`), each task's own parameters (heads) get their own
    unweighted gradient, as for every aggregator here. The official code and LibMTL instead
    back-propagate Σ_i α_i L_i, so head i's gradient is scaled by α_i (up to about 3× the step size
    of the heads on NYUv2). ``TrainConfig(head_gradients="weighted")`` reproduces that (with
    :attr:`loss_weights`, the α before ``max_norm`` clipping, which the official code applies to
    the shared gradients only), and ``TrainConfig(shared="all_but_heads")`` the code's split, in
    which every parameter but the output heads (e.g. all tasks' MTAN attention modules) counts as
    shared and enters the Gramian.

    Args:
        solver: ``"newton"`` or ``"ccp"``.
        update_weights_every: recompute α every N steps and reuse it in between (official code
            option, default 1 = every step).
        max_norm: if > 0, scale α so that ‖Σ α_i g_i‖ ≤ max_norm (the official code clips the
            update norm to 1.0; the paper does not), 0 = off.
        optim_niter: iterations of the ``"ccp"`` solver (official default 20).
        on_failure: ``"warn"`` or ``"raise"``.
    """

    name = "nash_mtl"
    claims = frozenset({"scale_invariant", "permutation_invariant"})
    paper = "Navon et al. 2022, Multi-Task Learning as a Bargaining Game (ICML)"
    equation = "Eq. (2), Claim 3.1: d = Σ α_i g_i with GᵀG α = 1/α (α_i⟨g_i, d⟩ = 1)"
    stateful = True

    def __init__(
        self,
        solver: str = "newton",
        update_weights_every: int = 1,
        max_norm: float = 0.0,
        optim_niter: int = 20,
        on_failure: str = "warn",
    ) -> None:
        super().__init__()
        if solver not in ("newton", "ccp"):
            raise self._invalid(f"solver must be 'newton' or 'ccp', got {solver!r}.")
        if not isinstance(update_weights_every, int) or update_weights_every < 1:
            raise self._invalid(f"update_weights_every must be an integer ≥ 1, got {update_weights_every!r}.")
        if not (isinstance(max_norm, (int, float)) and max_norm >= 0):
            raise self._invalid(f"max_norm must be ≥ 0 (0 disables clipping), got {max_norm!r}.")
        if not isinstance(optim_niter, int) or optim_niter < 1:
            raise self._invalid(f"optim_niter must be an integer ≥ 1, got {optim_niter!r}.")
        if on_failure not in ("warn", "raise"):
            raise self._invalid(f"on_failure must be 'warn' or 'raise', got {on_failure!r}.")
        self.solver = solver
        self.update_weights_every = update_weights_every
        self.max_norm = float(max_norm)
        self.optim_niter = optim_niter
        self.on_failure = on_failure
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.alpha: np.ndarray | None = None
        self.failures = 0

    @property
    def loss_weights(self) -> Tensor | None:
        """α before ``max_norm`` clipping: the weights the official code multiplies the losses by."""
        if self.alpha is None or self.last_weights is None:
            return self.last_weights
        return torch.as_tensor(self.alpha, dtype=self.last_weights.dtype, device=self.last_weights.device)

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        if self.solver == "newton":
            return solve_bargaining_newton(gram, start=self.alpha)
        start = self.alpha if self.alpha is not None else np.ones(gram.shape[0])
        return solve_bargaining_ccp(gram, start=start, optim_niter=self.optim_niter)

    def weights(self, gramian: Tensor) -> Tensor:
        gram = gramian.detach().cpu().numpy().astype(np.float64)
        if self.alpha is not None and self.alpha.shape[0] != gram.shape[0]:
            raise self._invalid(
                f"the number of tasks changed from {self.alpha.shape[0]} to {gram.shape[0]}; call reset()."
            )
        if self.alpha is None or (self.calls - 1) % self.update_weights_every == 0:
            try:
                self.alpha = self._solve(gram)
            except SolverError as error:
                message = f"{self._where()}: {error}."
                if self.on_failure == "raise":
                    raise SolverError(
                        message + " Nash-MTL needs linearly independent, non-zero task gradients; "
                        "use on_failure='warn' to reuse the previous weights on such steps."
                    ) from None
                self.failures += 1
                if self.alpha is None:  # the official code's initial weights
                    self.alpha = np.ones(gram.shape[0])
                    fallback = " Using the official code's initial weights α = 1 (there is no previous step)."
                else:
                    fallback = " Reusing the previous step's weights."
                warnings.warn(message + fallback, SolverWarning, stacklevel=4)
        alpha = self.alpha
        if self.max_norm > 0:
            norm = float(np.sqrt(max(alpha @ gram @ alpha, 0.0)))
            if norm > self.max_norm:
                alpha = alpha * (self.max_norm / norm)
        return torch.from_numpy(np.array(alpha)).to(device=gramian.device, dtype=gramian.dtype)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "alpha": None if self.alpha is None else self.alpha.tolist(),
            "failures": self.failures,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.alpha = None if state.get("alpha") is None else np.asarray(state["alpha"], dtype=np.float64)
        self.failures = int(state.get("failures", 0))
