"""The production model the simulator serves: a small MLP on scikit-learn's bundled digits.

Detectors of extraction, evasion and drift are only worth testing against a model that
behaves like a real one: confident on natural inputs, unsure near its decision boundaries,
fooled by gradient attacks, worse when retrained on poisoned labels. An MLP (64→64→10) on
`sklearn.datasets.load_digits` (1,797 8×8 images, pixels scaled to [0, 1]) is all of that,
ships with an installed package (no network), and trains on one CPU thread in a second or two.

Determinism: weights are initialised and batches shuffled from a `torch.Generator` seeded from
the model's spec (never torch's global RNG, which callers may be using), in float64 on a single
thread, so the same seed gives the same weights bit for bit, and so the same telemetry bytes.
Trained models are cached per process: every scenario of a run shares one production model.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import nn

from mlwarden.streams.simulation.traffic import (
    N_CLASSES,
    N_FEATURES,
    FloatArray,
    IntArray,
    child_rng,
)
from mlwarden.streams.simulation.transforms import natural_variation

MODEL_ID: Final = "digits-mlp"
_HOLDOUT_FRACTION: Final = 0.4
_SPLIT_SEED: Final = 20_260_101
_HIDDEN: Final = 64
_EPOCHS: Final = 20
_AUGMENTED_COPIES: Final = 4
_BATCH: Final = 64
_LEARNING_RATE: Final = 3e-3


@dataclass(frozen=True, slots=True)
class DigitsData:
    """The fixed split: the model trains on `train`; clients query from `holdout`.

    Benign traffic, the attackers' seed sets and the accuracy figure all come from the held-out
    part, so no query is a training image the model memorised.
    """

    x_train: FloatArray
    y_train: IntArray
    x_holdout: FloatArray
    y_holdout: IntArray

    def holdout_of_class(self, label: int) -> FloatArray:
        return np.asarray(self.x_holdout[self.y_holdout == label], dtype=np.float64)


@functools.cache
def digits() -> DigitsData:
    """load_digits with pixels scaled to [0, 1], split 60/40 with a fixed seed."""
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(x))
    cut = int(len(x) * (1.0 - _HOLDOUT_FRACTION))
    train, holdout = order[:cut], order[cut:]
    return DigitsData(x[train], y[train], x[holdout], y[holdout])


@dataclass(frozen=True, slots=True)
class LabelFlip:
    """Poisoned training labels (Biggio, Nelson & Laskov 2012; Xiao et al. 2012).

    A share `flip_fraction` of class `source` is relabelled `target` (a targeted flip, as an
    insider or a compromised labelling vendor would do), and `noise_fraction` of all labels is
    replaced at random (sloppy or adversarial crowd labels). The retrained model is less
    accurate on the source class and less confident everywhere: what a rollout should not ship.
    """

    source: int = 8
    target: int = 3
    flip_fraction: float = 0.7
    noise_fraction: float = 0.15

    def describe(self) -> str:
        return (
            f"label flip: {self.flip_fraction:.0%} of class {self.source} relabelled "
            f"{self.target}, then {self.noise_fraction:.0%} of all labels random"
        )

    def apply(self, labels: IntArray, rng: np.random.Generator) -> IntArray:
        poisoned = labels.copy()
        flip = (poisoned == self.source) & (rng.random(len(poisoned)) < self.flip_fraction)
        poisoned[flip] = self.target
        noisy = rng.random(len(poisoned)) < self.noise_fraction
        poisoned[noisy] = rng.integers(0, N_CLASSES, size=int(noisy.sum()))
        return poisoned


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a trained model is a function of; the cache key."""

    seed: int
    poisoning: LabelFlip | None = None


class MLP(nn.Module):
    """64 → hidden → 10, ReLU; logits out. Also the attackers' substitute architecture."""

    def __init__(self, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = nn.Linear(N_FEATURES, hidden, dtype=torch.float64)
        self.out = nn.Linear(hidden, N_CLASSES, dtype=torch.float64)
        for layer in (self.hidden, self.out):
            bound = 1.0 / float(np.sqrt(layer.in_features))
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.out(torch.relu(self.hidden(x))))


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: reductions then sum in one order, so results are bit-stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(
    x: FloatArray,
    y: IntArray,
    seed: int,
    *,
    hidden: int = _HIDDEN,
    epochs: int = _EPOCHS,
    learning_rate: float = _LEARNING_RATE,
    batch_size: int = _BATCH,
) -> MLP:
    """A fresh MLP trained with Adam on (x, y); deterministic in `seed`."""
    generator = torch.Generator().manual_seed(seed)
    model = MLP(hidden, generator)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    targets = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    optimiser = _Adam(list(model.parameters()), learning_rate)
    with single_thread():
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), batch_size):
                batch = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
    model.eval()
    return model


class _Adam:
    """Adam (Kingma & Ba 2015) with L2 weight decay, as `torch.optim.Adam` computes it.

    Written out because `torch.optim`'s first `step()` imports torch's compiler stack, about
    three seconds per process — longer than training this model takes.
    """

    def __init__(
        self,
        parameters: list[nn.Parameter],
        learning_rate: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-4,
        eps: float = 1e-8,
    ) -> None:
        self._parameters = parameters
        self._learning_rate = learning_rate
        self._betas = betas
        self._weight_decay = weight_decay
        self._eps = eps
        self._first = [torch.zeros_like(p) for p in parameters]
        self._second = [torch.zeros_like(p) for p in parameters]
        self._steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """Apply one update from the gradients in `.grad`, then clear them."""
        self._steps += 1
        beta1, beta2 = self._betas
        correction1 = 1.0 - beta1**self._steps
        correction2 = 1.0 - beta2**self._steps
        for parameter, first, second in zip(
            self._parameters, self._first, self._second, strict=True
        ):
            if parameter.grad is None:
                continue
            gradient = parameter.grad + self._weight_decay * parameter
            first.mul_(beta1).add_(gradient, alpha=1.0 - beta1)
            second.mul_(beta2).addcmul_(gradient, gradient, value=1.0 - beta2)
            denominator = (second / correction2).sqrt_().add_(self._eps)
            parameter.addcdiv_(first, denominator, value=-self._learning_rate / correction1)
            parameter.grad = None


class Classifier:
    """A trained model as the inference service exposes it: inputs in, probabilities out."""

    def __init__(self, spec: ModelSpec, network: MLP) -> None:
        self.spec = spec
        self.network = network

    def probabilities(self, x: FloatArray) -> FloatArray:
        """Softmax outputs, one row per input row."""
        if len(x) == 0:
            return np.empty((0, N_CLASSES), dtype=np.float64)
        with single_thread(), torch.no_grad():
            logits = self.network(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
            return cast(FloatArray, torch.softmax(logits, dim=1).numpy())

    def predict(self, x: FloatArray) -> IntArray:
        return np.asarray(self.probabilities(x).argmax(axis=1), dtype=np.int64)

    def accuracy(self, x: FloatArray, y: IntArray) -> float:
        return float(np.mean(self.predict(x) == y))


@functools.lru_cache(maxsize=8)
def trained(spec: ModelSpec) -> Classifier:
    """The model for `spec`, trained once per process (one to two seconds on one CPU thread).

    Like any production image model it is trained with augmentation: each training digit
    plus four jittered copies (`transforms.natural_variation`, the same process that makes
    benign queries), so benign traffic is in its training distribution.
    """
    data = digits()
    labels = data.y_train
    if spec.poisoning is not None:
        labels = spec.poisoning.apply(labels, child_rng(spec.seed, "poisoning"))
    rng = child_rng(spec.seed, "augmentation")
    copies = [natural_variation(data.x_train, rng) for _ in range(_AUGMENTED_COPIES)]
    x = np.concatenate([data.x_train, *copies])
    y = np.tile(labels, _AUGMENTED_COPIES + 1)
    return Classifier(spec, fit(x, y, spec.seed))
