"""The linear head a classifier ranks intents with: multinomial logistic regression on normalised embeddings,
fitted by L-BFGS in numpy (no torch, no scipy: a serving worker refits it on every intent edit and stays small)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from fewintent.heads.decision import DecisionHead, HeadParams, log_softmax
from fewintent.heads.prototypes import class_means, l2_normalize


class LinearHead(DecisionHead):
    """Multinomial logistic regression on the normalised embeddings (:func:`fit_logistic`), started from the
    prototype head; refitted from the stored rows on every intent edit. The default: it won on ``valid``."""

    name = "linear"
    description = "logistic regression on the embeddings, started from the prototypes (the default)"

    def __init__(self, params: HeadParams, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__(params)
        self.weight, self.bias = weight, bias

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_labels: int,
        prototypes: np.ndarray,
        params: HeadParams,
        messages: np.ndarray | None = None,
    ) -> LinearHead:
        # Started from the prototype head (same scores at iteration 0); the optimum does not depend on it.
        init = (prototypes * params.scale, np.zeros(n_labels))
        return cls(params, *fit_logistic(x, y, n_labels, c=params.c, init=init))

    def logits(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        return emb @ self.weight.T + self.bias

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"head_weight": self.weight, "head_bias": self.bias}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray], prototypes: np.ndarray, params: HeadParams) -> LinearHead:
        w, b = tensors.get("head_weight"), tensors.get("head_bias")
        if w is None or b is None or w.shape != prototypes.shape or tuple(b.shape) != (len(prototypes),):
            raise ValueError("lacks the linear head's weights or they do not match the labels")
        return cls(params, np.asarray(w, np.float32), np.asarray(b, np.float32))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    c: float,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by L-BFGS (:func:`lbfgs`); returns float32 ``(weight (n_classes, dim), bias
    (n_classes,))``.

    The objective is scikit-learn's ``LogisticRegression(C=c)`` divided by ``c * n``:
    ``mean cross-entropy + |W|^2 / (2 c n)`` (bias not penalised), so ``c`` means the same as there. It is
    convex; ``init`` (e.g. the prototype head's weights; default: 20 x the normalised class means) only makes
    L-BFGS converge in fewer iterations. Inputs may be anything ``np.asarray`` takes.

    Example:
        >>> w, b = fit_logistic(np.eye(4), np.array([0, 0, 1, 1]), 2, c=10.0)
        >>> (np.eye(4) @ w.T + b).argmax(-1).tolist()
        [0, 0, 1, 1]
    """
    if not (c > 0 and math.isfinite(c)):
        raise ValueError(f"c must be a positive number, got {c}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, dim = x.shape
    if init is None:
        init = 20.0 * l2_normalize(class_means(x, y, n_classes)), np.zeros(n_classes)
    start = np.concatenate([np.asarray(init[0], np.float64).ravel(), np.asarray(init[1], np.float64).ravel()])
    penalty = 1.0 / (2.0 * c * max(n, 1))
    rows = np.arange(n)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: n_classes * dim].reshape(n_classes, dim), theta[n_classes * dim :]
        log_p = log_softmax(x @ w.T + b)
        loss = -float(np.mean(log_p[rows, y])) + penalty * float(np.sum(w * w))
        p = np.exp(log_p)
        p[rows, y] -= 1.0
        p /= max(n, 1)
        return loss, np.concatenate([(p.T @ x + 2.0 * penalty * w).ravel(), p.sum(axis=0)])

    theta = lbfgs(loss_and_grad, start, max_iter=max_iter)
    weight = theta[: n_classes * dim].reshape(n_classes, dim).astype(np.float32)
    return weight, theta[n_classes * dim :].astype(np.float32)


def lbfgs(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    *,
    max_iter: int = 200,
    history: int = 20,
    gtol: float = 1e-6,
    ftol: float = 1e-10,
) -> np.ndarray:
    """Minimise a smooth function ``f`` (returning value and gradient) from ``x`` by L-BFGS with a backtracking
    (Armijo) line search. Stops when every gradient entry is below ``gtol``, the value stops moving (``ftol``,
    relative) or after ``max_iter`` iterations. Meant for convex problems such as :func:`fit_logistic`'s.

    Scipy's L-BFGS-B gives the same optimum, but importing ``scipy.optimize`` costs a serving worker ~50 MB and
    0.4 s on its first intent edit.
    """
    value, grad = f(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1 / y.s), oldest first
    for _ in range(max_iter):
        if float(np.max(np.abs(grad), initial=0.0)) <= gtol:
            break
        direction = -grad  # two-loop recursion: the inverse Hessian estimate times -grad
        alphas = []
        for s, y, rho in reversed(steps):
            a = rho * float(s @ direction)
            direction = direction - a * y
            alphas.append(a)
        if steps:
            s, y, _ = steps[-1]
            direction = direction * (float(s @ y) / float(y @ y))
        for (s, y, rho), a in zip(steps, reversed(alphas)):
            direction = direction + (a - rho * float(y @ direction)) * s
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction (rounding): start over from the gradient
            steps.clear()
            direction, slope = -grad, -float(grad @ grad)
        t = 1.0 if steps else min(1.0, 1.0 / max(float(np.sum(np.abs(grad))), 1e-12))
        while True:
            new_value, new_grad = f(x + t * direction)
            if new_value <= value + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        s, y = t * direction, new_grad - grad
        x = x + s
        converged = abs(value - new_value) <= ftol * max(abs(value), abs(new_value), 1.0)
        value, grad = new_value, new_grad
        if converged:
            break
        if float(y @ s) > 1e-12:  # keeps the estimate positive definite
            steps = [*steps, (s, y, 1.0 / float(y @ s))][-history:]
    return x
