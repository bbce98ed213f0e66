"""Evasion: adversarial examples that flip the production model's prediction.

- FGSM — Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples"
  (ICLR 2015): one step of size ε along the sign of the loss gradient.
- PGD — Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
  Adversarial Attacks" (ICLR 2018): a random start in the L∞ ball, then `steps` signed-gradient
  steps of size α, each projected back into the ball and the [0, 1] feature box.

The attacker is white-box here (gradients of the production model itself), the worst case; a
black-box attacker transfers the same perturbations from a substitute at a lower success rate.
On 8×8 digits ε = 0.2 (a fifth of the pixel range) flips most predictions while the image
still looks like the original digit to a human — which is what makes it an attack rather
than garbage input, and why confidence alone does not catch it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
from torch import nn

from mlwarden.streams.simulation.model import Classifier, DigitsData, single_thread
from mlwarden.streams.simulation.traffic import FloatArray, IntArray, as_wire
from mlwarden.streams.simulation.transforms import natural_variation

FGSM_EPSILON: Final = 0.2
PGD_EPSILON: Final = 0.15
PGD_STEPS: Final = 10


def _loss_gradient_sign(classifier: Classifier, x: FloatArray, y: IntArray) -> FloatArray:
    with single_thread():
        inputs = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
        loss = nn.functional.cross_entropy(
            classifier.network(inputs), torch.from_numpy(y), reduction="sum"
        )
        (gradient,) = torch.autograd.grad(loss, inputs)
        gradient_array: FloatArray = gradient.numpy()
        return np.sign(gradient_array)


def fgsm(classifier: Classifier, x: FloatArray, y: IntArray, epsilon: float) -> FloatArray:
    """x + ε·sign(∇ₓ loss(x, y)), clipped to the feature box."""
    return np.clip(x + epsilon * _loss_gradient_sign(classifier, x, y), 0.0, 1.0)


def pgd(
    classifier: Classifier,
    x: FloatArray,
    y: IntArray,
    epsilon: float,
    rng: np.random.Generator,
    *,
    steps: int = PGD_STEPS,
    step_size: float | None = None,
) -> FloatArray:
    """Untargeted L∞ PGD with a uniform random start (Madry et al. 2018)."""
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    adversarial = np.clip(x + rng.uniform(-epsilon, epsilon, size=x.shape), 0.0, 1.0)
    for _ in range(steps):
        adversarial = adversarial + alpha * _loss_gradient_sign(classifier, adversarial, y)
        adversarial = np.clip(np.clip(adversarial, x - epsilon, x + epsilon), 0.0, 1.0)
    return adversarial


def adversarial_queries(
    classifier: Classifier,
    data: DigitsData,
    rng: np.random.Generator,
    count: int,
    method: str,
) -> FloatArray:
    """`count` adversarial versions of natural digits (as benign clients send), to be sent."""
    rows = rng.integers(0, len(data.x_holdout), size=count)
    x, y = natural_variation(data.x_holdout[rows], rng), data.y_holdout[rows]
    if method == "fgsm":
        return as_wire(fgsm(classifier, x, y, FGSM_EPSILON))
    if method == "pgd":
        return as_wire(pgd(classifier, x, y, PGD_EPSILON, rng))
    raise ValueError(f"unknown evasion method {method!r}; known: fgsm, pgd")
