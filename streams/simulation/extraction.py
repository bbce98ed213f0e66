"""Model-extraction campaigns: three ways to steal a classifier through its prediction API.

Each function returns a `Campaign` (see `campaign.py`): a loop that queries a metered oracle
until the attacker's window closes. They differ in *what* they ask, which is what extraction
detectors key on:

- `jacobian_augmentation` — Papernot, McDaniel, Goodfellow, Jha, Celik & Swami, "Practical
  Black-Box Attacks against Machine Learning" (AsiaCCS 2017). A small natural seed set,
  labelled by the oracle, trains a substitute; each round adds x + λ·sign(∂F_y/∂x) for every
  known x (F the substitute, y the oracle's label), doubling the set. Queries creep away from
  the data manifold in synthetic, structured steps — the pattern PRADA (Juuti, Szyller,
  Marchal & Asokan, EuroS&P 2019) detects from the distances between a client's queries.
- `uniform_random` — Tramèr, Zhang, Juels, Reiter & Ristenpart, "Stealing Machine Learning
  Models via Prediction APIs" (USENIX Security 2016): uniformly random points of the feature
  box, labelled with full confidence scores, then retraining on them.
- `natural_out_of_distribution` — Orekondy, Schiele & Fritz, "Knockoff Nets: Stealing
  Functionality of Black-Box Models" (CVPR 2019), random strategy: natural images from another
  distribution (here transformed digits; see `transforms.py`).
"""

from __future__ import annotations

from itertools import count
from typing import Final

import numpy as np
import torch

from mlwarden.streams.simulation.campaign import Budget, Campaign
from mlwarden.streams.simulation.model import MLP, DigitsData, fit, single_thread
from mlwarden.streams.simulation.traffic import (
    N_CLASSES,
    N_FEATURES,
    FloatArray,
    IntArray,
    as_wire,
)
from mlwarden.streams.simulation.transforms import natural_ood, natural_variation

_BATCH: Final = 50
"""Non-adaptive attackers still send in batches: one scripted loop iteration's worth."""


def _balanced_seed_set(data: DigitsData, size: int, rng: np.random.Generator) -> FloatArray:
    """`size` natural held-out digits, as evenly spread over the classes as `size` allows."""
    per_class = max(1, size // N_CLASSES)
    picks = [
        rng.choice(np.flatnonzero(data.y_holdout == label), size=per_class, replace=False)
        for label in range(N_CLASSES)
    ]
    chosen = np.concatenate(picks)[:size]
    return natural_variation(data.x_holdout[rng.permutation(chosen)], rng)


def substitute_jacobian_sign(substitute: MLP, x: FloatArray, labels: IntArray) -> FloatArray:
    """sign(∂F_y(x)/∂x) for each row: F the substitute's softmax, y the oracle's label."""
    with single_thread():
        inputs = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
        probabilities = torch.softmax(substitute(inputs), dim=1)
        chosen = probabilities.gather(1, torch.from_numpy(labels)[:, None]).sum()
        (gradient,) = torch.autograd.grad(chosen, inputs)
        gradient_array: FloatArray = gradient.numpy()
        return np.sign(gradient_array)


def jacobian_augmentation(
    data: DigitsData,
    rng: np.random.Generator,
    *,
    seed_size: int = 100,
    step: float = 0.1,
    step_period: int = 3,
    substitute_epochs: int = 15,
) -> Campaign:
    """Papernot et al. 2017, Algorithm 1, with their periodic step size λ·(-1)^⌊ρ/τ⌋.

    Round ρ queries only the points it has not labelled yet: 100, 100, 200, 400, ... — the
    substitute is retrained from scratch on everything labelled so far before each augmentation.
    """

    def campaign(budget: Budget) -> None:
        pending = _balanced_seed_set(data, seed_size, rng)
        known_x = np.empty((0, N_FEATURES))
        known_y = np.empty(0, dtype=np.int64)
        for round_index in count():
            labels = budget.labels(pending)
            known_x = np.concatenate([known_x, as_wire(pending)])
            known_y = np.concatenate([known_y, labels])
            substitute = fit(
                known_x,
                known_y,
                int(rng.integers(2**62)),
                hidden=32,
                epochs=substitute_epochs,
                batch_size=128,
            )
            signed = (-1.0) ** (round_index // step_period) * step
            gradient_sign = substitute_jacobian_sign(substitute, known_x, known_y)
            pending = np.clip(known_x + signed * gradient_sign, 0.0, 1.0)

    return campaign


def uniform_random(rng: np.random.Generator) -> Campaign:
    """Tramèr et al. 2016: points drawn uniformly from the [0, 1]^64 feature box."""

    def campaign(budget: Budget) -> None:
        while True:
            budget.ask(rng.uniform(0.0, 1.0, size=(_BATCH, N_FEATURES)))

    return campaign


def natural_out_of_distribution(data: DigitsData, rng: np.random.Generator) -> Campaign:
    """Orekondy et al. 2019 (random strategy): natural images from a different distribution."""

    def campaign(budget: Budget) -> None:
        while True:
            images = data.x_holdout[rng.integers(0, len(data.x_holdout), size=_BATCH)]
            budget.ask(natural_ood(images, rng))

    return campaign
