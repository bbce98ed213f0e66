"""How an adaptive attacker talks to the model: through a metered oracle, one answer per query.

Adaptive attacks (Jacobian augmentation, boundary walks) choose each query from the answers to
the previous ones, so they cannot be generated up front. The simulator first draws the
attacker's arrival times (a paced script, a few queries per second), which fixes how many
queries fit in the attack window; the attack then runs as a plain loop against a `Budget` that
answers until that number is spent and then raises `BudgetSpent`, which ends the campaign.
The attack code stays a readable transcription of the paper, with no bookkeeping of time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from mlwarden.streams.simulation.traffic import N_FEATURES, FloatArray, IntArray, as_wire

Oracle = Callable[[FloatArray], FloatArray]
"""The prediction API: (n, 64) inputs → (n, 10) probabilities."""

Campaign = Callable[["Budget"], None]
"""An attack loop: asks the budget until it raises `BudgetSpent`."""


class BudgetSpent(Exception):  # noqa: N818 - a signal that ends a campaign, not an error
    """The attacker's time window is over: no more queries will be answered."""


class Budget:
    """The oracle, metered: records every query in order and stops after `limit` of them."""

    def __init__(self, oracle: Oracle, limit: int) -> None:
        self._oracle = oracle
        self._limit = limit
        self._asked: list[FloatArray] = []
        self._count = 0

    @property
    def remaining(self) -> int:
        return self._limit - self._count

    def ask(self, inputs: FloatArray) -> FloatArray:
        """Probabilities for each row of `inputs` (sent as wire-format features).

        Raises `BudgetSpent` once the limit is reached; the rows that still fitted are recorded.
        """
        rows = as_wire(np.atleast_2d(inputs))
        if self.remaining <= 0:
            raise BudgetSpent
        taken = rows[: self.remaining]
        self._asked.append(taken)
        self._count += len(taken)
        if len(taken) < len(rows):
            raise BudgetSpent
        return self._oracle(taken)

    def labels(self, inputs: FloatArray) -> IntArray:
        """The top-1 label of each row, for attacks that only use the label."""
        return np.asarray(self.ask(inputs).argmax(axis=1), dtype=np.int64)

    def queries(self) -> FloatArray:
        if not self._asked:
            return np.empty((0, N_FEATURES), dtype=np.float64)
        return np.concatenate(self._asked)


def run(campaign: Campaign, oracle: Oracle, limit: int) -> FloatArray:
    """Run `campaign` until it has sent `limit` queries (or gives up); return them in order."""
    budget = Budget(oracle, limit)
    with contextlib.suppress(BudgetSpent):  # the normal end of every campaign
        campaign(budget)
    return budget.queries()
