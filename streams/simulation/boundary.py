"""Decision-boundary probing: a HopSkipJump-style walk that only sees the top-1 label.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack" (IEEE
S&P 2020), after the Boundary Attack of Brendel, Rauber & Bethge (ICLR 2018). From a natural
digit x₀ (label y₀) and a natural digit of another class, the attacker

1. binary-searches the segment between them for the decision boundary (~10 queries);
2. estimates the boundary's normal by Monte-Carlo: labels of many tiny random perturbations of
   the boundary point (30·√t queries at iteration t), averaged with their ±1 outcome;
3. steps along that estimate, halving the step until the label differs from y₀ again;
4. binary-searches back towards x₀ and repeats, so the adversarial point creeps closer to x₀.

The traffic this leaves is what stateful defences look for (Chen, Carlini & Wagner, "Stateful
Detection of Black-Box Adversarial Attacks", 2020): bursts of near-duplicate queries, all with
low top-1 margins, from one client. After a few iterations the attacker moves to a new x₀.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from mlwarden.streams.simulation.campaign import Budget, Campaign
from mlwarden.streams.simulation.model import DigitsData
from mlwarden.streams.simulation.traffic import N_FEATURES, FloatArray
from mlwarden.streams.simulation.transforms import natural_variation

_TOLERANCE: Final = 1e-3
"""Binary search stops when the bracket is this short (as a fraction of the segment)."""
_MIN_STEP: Final = 1e-3


def _label(budget: Budget, x: FloatArray) -> int:
    return int(budget.labels(x[None, :])[0])


def _boundary_point(
    budget: Budget, original: FloatArray, adversarial: FloatArray, y0: int
) -> FloatArray:
    """The point of the segment nearest `original` that is still not labelled y0 (±tolerance)."""
    low, high = 0.0, 1.0
    while high - low > _TOLERANCE:
        middle = 0.5 * (low + high)
        if _label(budget, original + middle * (adversarial - original)) != y0:
            high = middle
        else:
            low = middle
    return original + high * (adversarial - original)


def _normal_estimate(
    budget: Budget, point: FloatArray, y0: int, probes: int, radius: float, rng: np.random.Generator
) -> FloatArray | None:
    """Monte-Carlo estimate of the boundary normal at `point` (HopSkipJump, eq. 9-10)."""
    directions = rng.normal(size=(probes, N_FEATURES))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    outcome = np.where(budget.labels(point + radius * directions) != y0, 1.0, -1.0)
    if np.all(outcome == outcome[0]):
        return None  # every probe on one side: the radius is too large or too small
    weights = outcome - outcome.mean()  # the baseline HopSkipJump subtracts to cut variance
    normal = (weights[:, None] * directions).mean(axis=0)
    size = float(np.linalg.norm(normal))
    return normal / size if size > 0.0 else None


def hop_skip_jump(
    data: DigitsData,
    rng: np.random.Generator,
    *,
    iterations_per_target: int = 8,
    probes_per_iteration: int = 30,
) -> Campaign:
    """An untargeted HopSkipJump (L2) loop over a stream of natural starting digits."""

    def campaign(budget: Budget) -> None:
        while True:
            pick = int(rng.integers(len(data.x_holdout)))
            original = natural_variation(data.x_holdout[pick : pick + 1], rng)[0]
            y0 = _label(budget, original)
            other = data.x_holdout[data.y_holdout != y0]
            adversarial = other[int(rng.integers(len(other)))]
            if _label(budget, adversarial) == y0:
                continue  # the model disagrees with the label: pick another pair
            point = _boundary_point(budget, original, adversarial, y0)
            for iteration in range(1, iterations_per_target + 1):
                distance = float(np.linalg.norm(point - original))
                radius = max(distance / N_FEATURES, 0.01)
                normal = _normal_estimate(
                    budget,
                    point,
                    y0,
                    int(probes_per_iteration * np.sqrt(iteration)),
                    radius,
                    rng,
                )
                if normal is None:
                    break
                step = distance / np.sqrt(iteration)
                candidate = point
                while step > _MIN_STEP:  # geometric step-size search
                    trial = np.clip(point + step * normal, 0.0, 1.0)
                    if _label(budget, trial) != y0:
                        candidate = trial
                        break
                    step /= 2.0
                point = _boundary_point(budget, original, candidate, y0)

    return campaign
