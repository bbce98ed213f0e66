"""Golden streams of the per-model detectors: a version's baseline, a benign stretch, a change.

The defaults are sized for production (baselines of thousands of events, one feature event in
ten sampled); each scenario's `config` shrinks the baseline and windows so a few thousand
records hold the baseline, a benign stretch of several evaluations, and the change. The
false-alarm budgets are loosened accordingly, and say so in `config`.
"""

from __future__ import annotations

import numpy as np

from mlwarden.schemas.alert import AlertKind, Severity
from tests.golden.spec import Expected, Scenario
from tests.golden.streams import Draft, Rng, arrivals, confident_vector, margin_vector, paced

_WINDOWED = {
    "baseline_size": 600,
    "window_size": 200,
    "evaluate_every": 50,
    "expected_run_length_events": 1e6,
    "close_after": 4,
}

# --- prediction_drift -------------------------------------------------------------------------

PRIORS = (0.55, 0.25, 0.15, 0.05)
FRAUD_WAVE = (0.45, 0.20, 0.10, 0.25)
MIX_DRIFT = 360.0  # 1800 events at 5/s: the 600-event baseline, then 1200 benign events
ROLLOUT = 480.0


def _prediction_drift(rng: Rng) -> list[Draft]:
    drafts = []
    for at in paced(0.0, 3000, 5.0):
        priors = PRIORS if at < MIX_DRIFT else FRAUD_WAVE
        version = "1" if at < ROLLOUT else "2"
        label = int(rng.choice(4, p=priors))
        drafts.append(Draft(at, f"acct-{int(rng.integers(0, 40)):02d}", label, version=version))
    return drafts


PREDICTION_DRIFT = Scenario(
    detector="prediction_drift",
    model_id="fraud-scorer",
    prefix="pd",
    seed=707,
    story=(
        "A 4-class model at 5 events/s from 40 clients: v1 learns its baseline from its first "
        "600 predictions (class mix 55/25/15/5%), then 1200 benign ones; at minute 6 class 3 "
        "rises from 5% to 25% of predictions (a fraud wave, or a broken feature); at minute 8 "
        "v2 replaces v1 and predicts the new mix from the start."
    ),
    config=_WINDOWED,
    build=_prediction_drift,
    expected=(
        Expected(
            "v1's class mix leaves its baseline: the Rao-Scott chi-square of the latest 200 "
            "predictions against the 600 of the baseline passes the 5e-5 level (one test "
            "every 50 events, ERL 1e6) within a few evaluations of the change.",
            AlertKind.DRIFT,
            Severity.WARNING,
            "1",
            None,
            after=MIX_DRIFT,
            within=60.0,
        ),
        Expected(
            "v2's baseline (600 predictions of the new mix) differs from v1's by the same "
            "test and by PSI >= 0.05: a regressed rollout, critical, raised by the event that "
            "completes v2's baseline; v2's own drift test stays quiet.",
            AlertKind.DRIFT,
            Severity.CRITICAL,
            "2",
            None,
            after=ROLLOUT + 119.0,
            within=2.0,
            labels={"rollout": "regression"},
        ),
    ),
)

# --- confidence_shift -------------------------------------------------------------------------

CONFIDENCE_DROP = 360.0


def _confidence_shift(rng: Rng) -> list[Draft]:
    drafts = []
    for at in paced(0.0, 2400, 5.0):
        label = int(rng.choice(3, p=(0.5, 0.3, 0.2)))
        top1_mean = 0.85 if at < CONFIDENCE_DROP else 0.78
        vector = confident_vector(rng, label, 3, top1_mean)
        client = f"acct-{int(rng.integers(0, 40)):02d}"
        drafts.append(Draft(at, client, label, probabilities=vector))
    return drafts


CONFIDENCE_SHIFT = Scenario(
    detector="confidence_shift",
    model_id="triage-model",
    prefix="cs",
    seed=808,
    story=(
        "A 3-class model at 5 events/s from 40 clients: v1 learns top-1, entropy and margin "
        "from its first 600 predictions (mean top-1 0.85), then 1200 benign ones; from "
        "minute 6 mean top-1 drops to 0.78 (inputs the model has not seen)."
    ),
    # A 600-event baseline cannot bound the CUSUM's run length for the default 0.15-std
    # target (its own estimation error is larger): the slow path targets 0.25 std here.
    config={**_WINDOWED, "cusum_shift_sigmas": 0.25},
    build=_confidence_shift,
    expected=(
        Expected(
            "v1 becomes less sure of itself: mean top-1 down ~0.07 (about half a baseline "
            "std), so entropy up and margin down as well; over the 200-event window one of "
            "them passes the fast path's z limit (six alarm sources sharing ERL 1e6) within a "
            "few evaluations, unless the slow CUSUM gets there first.",
            AlertKind.CONFIDENCE_SHIFT,
            Severity.WARNING,
            "1",
            None,
            after=CONFIDENCE_DROP,
            within=60.0,
        ),
    ),
)

# --- evasion_campaign -------------------------------------------------------------------------

CAMPAIGN = 360.0


def _evasion_campaign(rng: Rng) -> list[Draft]:
    drafts = []
    for client in range(30):
        rate, low_rate = float(rng.uniform(0.04, 0.12)), float(rng.uniform(0.02, 0.08))
        for at in arrivals(rng, rate, 0.0, 600.0):
            label = int(rng.integers(0, 4))
            vector = margin_vector(rng, label, 4, bool(rng.random() < low_rate))
            drafts.append(Draft(at, f"user-{client:02d}", label, probabilities=vector))
    # Two accounts submitting adversarial examples: most land just across the boundary.
    for attacker in ("acct-evade-1", "acct-evade-2"):
        for at in arrivals(rng, 1.0, CAMPAIGN, CAMPAIGN + 120.0):
            label = int(rng.integers(0, 4))
            vector = margin_vector(rng, label, 4, bool(rng.random() < 0.6))
            drafts.append(Draft(at, attacker, label, probabilities=vector))
    return drafts


EVASION_CAMPAIGN = Scenario(
    detector="evasion_campaign",
    model_id="content-filter",
    prefix="ec",
    seed=909,
    story=(
        "10 minutes of 30 benign clients of a 4-class model (~2.4 events/s, low-margin rates "
        "2-8% per client); from minute 6, for two minutes, two accounts send 1 query/s each, "
        "60% of them adversarial examples landing within 0.08 of the decision boundary."
    ),
    config={
        "window_seconds": 30,
        "bucket_seconds": 5,
        "warmup_events": 500,
        "quiet_seconds": 60,
    },
    build=_evasion_campaign,
    expected=(
        Expected(
            "The model's low-margin share in the 30 s window jumps from ~5% to ~25%: the "
            "Chernoff bound against 1.25x the baseline passes log(1/alpha) within seconds, and "
            "the accounts significant on their own own at least 50% of the excess. One "
            "model-wide alert for the campaign. It names acct-evade-1 only: acct-evade-2 has 7 "
            "low-margin events in 14 countable queries when it opens, 11.25 nats against the "
            "13.82 that alpha = 1e-6 asks of a single client.",
            AlertKind.EVASION,
            Severity.WARNING,
            "1",
            None,
            after=CAMPAIGN,
            within=30.0,
            labels={"pattern": "evasion_campaign"},
        ),
    ),
)

# --- feature_drift ----------------------------------------------------------------------------

FEATURE_STEP = 200.0  # 1000 events at 5/s: the 300-event baseline, then 700 benign events


def _feature_drift(rng: Rng) -> list[Draft]:
    times = paced(0.0, 1500, 5.0)
    values = rng.normal(0.0, 1.0, (len(times), 4))
    values[np.asarray(times) >= FEATURE_STEP, 2] += 1.0
    return [
        Draft(at, f"acct-{int(rng.integers(0, 40)):02d}", int(x[0] > 0), features=x.tolist())
        for at, x in zip(times, values, strict=True)
    ]


FEATURE_DRIFT = Scenario(
    detector="feature_drift",
    model_id="credit-model",
    prefix="fd",
    seed=1010,
    story=(
        "4 independent N(0, 1) features at 5 events/s: v1 learns its reference from its first "
        "300 events, then 700 benign events; from second 200 feature 2 moves up by one "
        "standard deviation (an upstream unit change) for the last 500 events."
    ),
    # Every event is looked at (the default samples 1 in 10), and the reference and test
    # windows are smaller than the defaults (500 / 200 sampled events).
    config={"sample_every": 1, "baseline_size": 300, "window_size": 100},
    build=_feature_drift,
    expected=(
        Expected(
            "ADWIN on feature 2 (delta 0.002 / 4 features) cuts within a few dozen events of "
            "the step; 100 events later the KS test of those 100 against the 300 reference "
            "values confirms it (alpha 1e-3). A one-std shift has a PSI far above 0.25, so the "
            "alert is critical. The other features never confirm.",
            AlertKind.DRIFT,
            Severity.CRITICAL,
            "1",
            None,
            after=FEATURE_STEP,
            within=60.0,
        ),
    ),
)

# --- mmd_drift --------------------------------------------------------------------------------

SPREAD = 220.0  # 1100 events at 5/s: the 400-event reference, then 700 benign events


def _mmd_drift(rng: Rng) -> list[Draft]:
    times = paced(0.0, 1600, 5.0)
    values = rng.normal(0.0, 1.0, (len(times), 2))
    values[np.asarray(times) >= SPREAD, 1] *= 2.0  # the spread doubles, the mean does not move
    return [
        Draft(at, f"acct-{int(rng.integers(0, 40)):02d}", int(x[0] > 0), features=x.tolist())
        for at, x in zip(times, values, strict=True)
    ]


MMD_DRIFT = Scenario(
    detector="mmd_drift",
    model_id="credit-model",
    prefix="md",
    seed=1111,
    story=(
        "2 independent N(0, 1) features at 5 events/s: v1 learns its reference from its first "
        "400 events, then 700 benign events; from second 220 feature 1's standard deviation "
        "doubles while its mean stays 0 — a change of spread, which feature_drift's location "
        "triggers leave to MMD."
    ),
    # Every event looked at, a smaller reference/window/cadence and 200 permutations (defaults
    # 1 in 10, 500 / 200 / 50, 1000), and a false-alarm budget of one per 1e5 events.
    config={
        "sample_every": 1,
        "baseline_size": 400,
        "window_size": 200,
        "evaluate_every": 25,
        "permutations": 200,
        "expected_run_length_events": 1e5,
        "critical_run_length_events": 1e7,
    },
    build=_mmd_drift,
    expected=(
        Expected(
            "The distribution moves: MMD^2 (RBF on normal scores) of the latest 200 events "
            "against the 400 of the reference passes the permutation null's extrapolated "
            "2.5e-4 quantile within a few tests (one every 25 events). On 12 other seeds the "
            "benign stretch peaked at half that threshold and the changed one at 1.8x or more.",
            AlertKind.DRIFT,
            Severity.WARNING,
            "1",
            None,
            after=SPREAD,
            within=60.0,
        ),
    ),
)
