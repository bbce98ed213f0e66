"""Golden streams of the per-client detectors: a benign population, then bad clients or a ring.

Each stream opens with a benign stretch long enough for the detector to warm up *and* to
test benign clients (so "the benign stretch raises nothing" is a claim, not a vacuous truth),
then adds the behaviour the detector exists to catch while the benign traffic goes on.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from mlwarden.schemas.alert import AlertKind, Severity
from tests.golden.spec import Expected, Scenario
from tests.golden.streams import Draft, Floats, Rng, arrivals, favourites, margin_vector, paced

# --- query_budget -------------------------------------------------------------------------

BUDGET_ATTACK = 300.0


def _query_budget(rng: Rng) -> list[Draft]:
    drafts = []
    for client in range(12):
        rate = float(rng.uniform(0.03, 0.15))  # 2-9 queries/min, under the 30/min budget
        for at in arrivals(rng, rate, 0.0, 600.0):
            drafts.append(Draft(at, f"acct-{client:02d}", int(rng.integers(0, 3))))
    # A power user under budget: 21/min on average, in Poisson bursts.
    for at in arrivals(rng, 0.35, 0.0, 600.0):
        drafts.append(Draft(at, "acct-power", int(rng.integers(0, 3))))
    # The scraper: 2/s (4x the budget) for two minutes, quiet for a minute, then 8/s.
    for at in [*paced(BUDGET_ATTACK, 240, 2.0), *paced(BUDGET_ATTACK + 180.0, 120, 8.0)]:
        drafts.append(Draft(at, "acct-scraper", int(rng.integers(0, 3))))
    return drafts


QUERY_BUDGET = Scenario(
    detector="query_budget",
    model_id="llm-chat",
    prefix="qb",
    seed=101,
    story=(
        "10 minutes of 13 benign clients under a 30/min budget (one at 21/min, in bursts); "
        "from minute 5 a scraper sends 2 queries/s for 2 minutes, pauses a minute (its bucket "
        "refills in 20 s, closing the incident), then sends 8/s for 15 s."
    ),
    config={"rate_per_minute": 30, "burst": 10},
    build=_query_budget,
    expected=(
        Expected(
            "The scraper's first run: 4x the budget. Its burst of 10 lasts ~7 s at a net "
            "1.5 tokens/s spent, then one alert for the whole two minutes (warning: under 10x).",
            AlertKind.ABUSE,
            Severity.WARNING,
            "1",
            "acct-scraper",
            after=BUDGET_ATTACK,
            within=10.0,
        ),
        Expected(
            "The scraper's second run, a new incident after the refill: 8/s is 16x the "
            "budget, so critical.",
            AlertKind.ABUSE,
            Severity.CRITICAL,
            "1",
            "acct-scraper",
            after=BUDGET_ATTACK + 180.0,
            within=5.0,
        ),
    ),
)

# --- prada ------------------------------------------------------------------------------------

PRADA_ATTACK = 360.0


@cache
def _digits() -> tuple[Floats, Floats]:
    """scikit-learn's bundled 8x8 digits in [0, 1] (multiples of 1/16), and class centroids."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    data, labels = load_digits(return_X_y=True)
    data = np.asarray(data, dtype=np.float64) / 16.0
    centroids = np.stack([data[labels == c].mean(axis=0) for c in range(10)])
    return data, centroids


def _nearest_centroid(x: Floats) -> list[int]:
    """The stand-in model: the class of the nearest centroid."""
    _, centroids = _digits()
    distances = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return [int(c) for c in distances.argmin(axis=1)]


def _jacobian(rng: Rng, count: int, step: float = 0.1) -> Floats:
    """Papernot et al.'s Jacobian augmentation: 20 natural seeds, then rounds of
    x + step * sign(dF_y/dx) for every known x. The substitute F is retrained between rounds
    (here: a fresh linear one), so no round repeats an earlier query exactly."""
    data, _ = _digits()
    known = data[rng.choice(len(data), size=20, replace=False)]
    parts = [known]
    while sum(len(p) for p in parts) < count:
        substitute = rng.normal(size=(10, 64))
        signs = np.sign(substitute[_nearest_centroid(known)])
        fresh = np.clip(known + step * signs, 0.0, 1.0)
        parts.append(fresh)
        known = np.concatenate([known, fresh])
    return np.concatenate(parts)[:count]


def _prada(rng: Rng) -> list[Draft]:
    data, _ = _digits()
    drafts = []
    for client in range(3):
        times = arrivals(rng, 0.45, float(rng.uniform(0.0, 30.0)), 540.0)
        queries = data[rng.choice(len(data), size=len(times), replace=False)]
        for at, x, label in zip(times, queries, _nearest_centroid(queries), strict=True):
            drafts.append(Draft(at, f"user-{client}", label, features=x.tolist()))
    queries = _jacobian(rng, 200)
    times = paced(PRADA_ATTACK, len(queries), 2.0)
    for at, x, label in zip(times, queries, _nearest_centroid(queries), strict=True):
        drafts.append(Draft(at, "acct-jacobian", label, features=x.tolist()))
    return drafts


PRADA = Scenario(
    detector="prada",
    model_id="digits",
    prefix="pr",
    seed=202,
    story=(
        "9 minutes of 3 benign clients sending ~240 natural digits each (64 features, "
        "scikit-learn's 8x8 digits, a nearest-centroid model); at minute 6 a client starts "
        "Jacobian-augmentation extraction (Papernot et al.): 20 natural seeds, then "
        "x + 0.1 * sign(gradient) rounds, 200 queries at 2/s."
    ),
    config={},
    build=_prada,
    expected=(
        Expected(
            "Jacobian augmentation: each query is an earlier one moved by 0.1 on many pixels, "
            "so its minimum distances pile up in a narrow band (not a bell) and Shapiro-Wilk W "
            "falls far under delta = 0.9 at its first tests (~120-140 queries); the benign "
            "clients' tests, from their ~110th query on, stay above 0.94.",
            AlertKind.EXTRACTION,
            Severity.WARNING,
            "1",
            "acct-jacobian",
            after=PRADA_ATTACK,
            within=120.0,
        ),
    ),
)

# --- blacklight -------------------------------------------------------------------------------

PROBE_ATTACK = 300.0
RING_ATTACK = 420.0


def _blacklight(rng: Rng) -> list[Draft]:
    drafts = []
    for client in range(20):
        previous = None
        for at in arrivals(rng, float(rng.uniform(0.04, 0.12)), 0.0, 600.0):
            retry = previous is not None and rng.random() < 0.03  # a client retrying a request
            x = previous if retry and previous is not None else rng.uniform(0.0, 1.0, 8)
            drafts.append(Draft(at, f"user-{client:02d}", int(x.argmax()), features=x.tolist()))
            previous = x
    # HopSkipJump-like probing from one account: 60 tiny perturbations of one input, 1/s.
    source = rng.uniform(0.0, 1.0, 8)
    for at in paced(PROBE_ATTACK, 60, 1.0):
        x = np.clip(source + rng.normal(0.0, 0.004, 8), 0.0, 1.0)
        drafts.append(Draft(at, "acct-probe", int(x.argmax()), features=x.tolist()))
    # The same attack split round-robin over 6 accounts (4 queries each) to stay under limits.
    source = rng.uniform(0.0, 1.0, 8)
    for i, at in enumerate(paced(RING_ATTACK, 24, 0.5)):
        x = np.clip(source + rng.normal(0.0, 0.004, 8), 0.0, 1.0)
        drafts.append(Draft(at, f"ring-{i % 6}", int(x.argmax()), features=x.tolist()))
    return drafts


BLACKLIGHT = Scenario(
    detector="blacklight",
    model_id="fraud-scorer",
    prefix="bl",
    seed=303,
    story=(
        "10 minutes of 20 benign clients sending fresh random 8-feature inputs in [0, 1] "
        "(3% exact retries of their previous query); from minute 5 one account sends 60 tiny "
        "perturbations (sigma 0.004) of one input, and from minute 7 six accounts send 24 "
        "perturbations of another input between them, round-robin."
    ),
    config={},
    build=_blacklight,
    expected=(
        Expected(
            "The prober: every query after its first is a near-duplicate of its own earlier "
            "ones (one quantised window of 8 features: needs an exact quantised match), so its "
            "10th match among its last 50 queries opens the incident. Benign retries give a "
            "client one or two matches, never ten.",
            AlertKind.EXTRACTION,
            Severity.WARNING,
            "1",
            "acct-probe",
            after=PROBE_ATTACK,
            within=20.0,
            labels={"pattern": "near_duplicates"},
        ),
        Expected(
            "The ring: no account reaches 10 own matches, but the perturbations chain into one "
            "cluster in which 5 accounts have sent 3 queries each (sybil, critical); the alert "
            "names the account whose query completed it.",
            AlertKind.EXTRACTION,
            Severity.CRITICAL,
            "1",
            "ring-*",
            after=RING_ATTACK,
            within=60.0,
            labels={"pattern": "sybil"},
        ),
    ),
)

# --- boundary_probing ---------------------------------------------------------------------

HSJ_ATTACK = 300.0


def _boundary_probing(rng: Rng) -> list[Draft]:
    drafts = []
    for client in range(25):
        rate, low_rate = float(rng.uniform(0.04, 0.12)), float(rng.uniform(0.02, 0.08))
        weights = favourites(rng, 4, weight=0.6)
        for at in arrivals(rng, rate, 0.0, 600.0):
            label = int(rng.choice(4, p=weights))
            vector = margin_vector(rng, label, 4, bool(rng.random() < low_rate))
            drafts.append(Draft(at, f"user-{client:02d}", label, probabilities=vector))
    # A decision-based attack walking the boundary between classes 1 and 2: 70% low margin.
    for at in arrivals(rng, 1.0, HSJ_ATTACK, HSJ_ATTACK + 120.0):
        label = int(rng.integers(1, 3))
        vector = margin_vector(rng, label, 4, bool(rng.random() < 0.7))
        drafts.append(Draft(at, "acct-hsj", label, probabilities=vector))
    return drafts


BOUNDARY_PROBING = Scenario(
    detector="boundary_probing",
    model_id="fraud-scorer",
    prefix="bp",
    seed=404,
    story=(
        "10 minutes of 25 benign clients of a 4-class model, each with its own low-margin "
        "rate between 2% and 8%; from minute 5 a HopSkipJump-like client sends ~120 queries "
        "at 1/s, 70% of them within 0.08 of the decision boundary."
    ),
    config={"warmup_events": 400},
    build=_boundary_probing,
    expected=(
        Expected(
            "The prober: at 70% low-margin against a population near 5-7%, the SPRT "
            "(H0 2x, H1 6x the population's rate, alpha 1e-6) crosses log A after ~15-30 of "
            "its queries; benign clients at up to 8% accept H0 again and again.",
            AlertKind.EXTRACTION,
            Severity.WARNING,
            "1",
            "acct-hsj",
            after=HSJ_ATTACK,
            within=60.0,
            labels={"pattern": "boundary_probing"},
        ),
    ),
)

# --- class_coverage ---------------------------------------------------------------------------

COVERAGE_ATTACK = 300.0


def _class_coverage(rng: Rng) -> list[Draft]:
    drafts = []
    for client in range(60):
        weights = favourites(rng, 10)
        start = float(rng.uniform(0.0, 300.0))
        count = int(rng.integers(15, 50))
        for at in sorted(rng.uniform(start, start + 300.0, count).tolist()):
            drafts.append(Draft(at, f"user-{client:02d}", int(rng.choice(10, p=weights))))
    # Extraction with public data: every class comes back about equally often.
    for at in paced(COVERAGE_ATTACK, 80, 0.5):
        drafts.append(Draft(at, "acct-knockoff", int(rng.integers(0, 10))))
    return drafts


CLASS_COVERAGE = Scenario(
    detector="class_coverage",
    model_id="digits",
    prefix="cc",
    seed=505,
    story=(
        "10 minutes of 60 benign clients of a 10-class model, 15-50 queries each, 90% of them "
        "on one to three favourite classes; from minute 5 a KnockoffNets-like client sends 80 "
        "queries at 0.5/s whose predictions cover all 10 classes evenly. Predictions only."
    ),
    config={
        "window": 40,
        "min_queries": 10,
        "stride": 10,
        "min_population": 20,
        "population_memory": 200,
    },
    build=_class_coverage,
    expected=(
        Expected(
            "The even client: by its 20th query (the second level, calibrated on 20+ benign "
            "clients' first 20 predictions) its normalised entropy is far above the benign "
            "null's median + 4.75 spreads (alpha 1e-6); benign clients, each with "
            "favourites, stay under it at every level.",
            AlertKind.EXTRACTION,
            Severity.WARNING,
            "1",
            "acct-knockoff",
            after=COVERAGE_ATTACK,
            within=120.0,
            labels={"pattern": "class_coverage"},
        ),
    ),
)

# --- ood_queries ------------------------------------------------------------------------------

OOD_ATTACK = 300.0
EVASION_ATTACK = 420.0


def _plane(rng: Rng) -> tuple[Floats, Floats]:
    """An orthonormal basis of the benign data's plane in 6 features, and of the rest."""
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    return basis[:, :2], basis[:, 2:]


def _natural(rng: Rng, plane: Floats, count: int) -> Floats:
    """Natural inputs: a 2-D latent (two clusters) on the plane, plus a little sensor noise."""
    centres = np.array([[-1.0, 0.0], [1.0, 0.5]])
    latent = centres[rng.integers(0, 2, count)] + rng.normal(0.0, 0.5, (count, 2))
    return np.asarray(latent @ plane.T + rng.normal(0.0, 0.03, (count, 6)))


def _ood_queries(rng: Rng) -> list[Draft]:
    plane, normal = _plane(rng)
    drafts = []
    for client in range(30):
        times = arrivals(rng, float(rng.uniform(0.05, 0.15)), 0.0, 600.0)
        for at, x in zip(times, _natural(rng, plane, len(times)), strict=True):
            drafts.append(Draft(at, f"user-{client:02d}", int(x[0] > 0), features=x.tolist()))
    # Tramer et al.'s extraction: uniform random inputs over the features' range.
    for at in paced(OOD_ATTACK, 60, 1.0):
        x = rng.uniform(-2.0, 2.0, 6)
        drafts.append(Draft(at, "acct-uniform", int(x[0] > 0), features=x.tolist()))
    # Evasion: natural inputs plus a small push in directions natural inputs never move in.
    pushes = rng.normal(size=(60, 4))
    pushes *= 0.75 / np.linalg.norm(pushes, axis=1, keepdims=True)
    evasive = _natural(rng, plane, 60) + pushes @ normal.T
    for at, x in zip(paced(EVASION_ATTACK, 60, 1.0), evasive, strict=True):
        drafts.append(Draft(at, "acct-evade", int(x[0] > 0), features=x.tolist()))
    return drafts


OOD_QUERIES = Scenario(
    detector="ood_queries",
    model_id="sensor-model",
    prefix="oq",
    seed=606,
    story=(
        "10 minutes of 30 benign clients whose 6 features lie near a 2-D plane (two clusters "
        "plus sensor noise of 0.03); from minute 5 one client sends 60 uniform random inputs "
        "(extraction), from minute 7 another sends 60 natural inputs pushed 0.75 off the "
        "plane (evasion). The first 300 vectors (at most 15 per client) are the reference."
    ),
    config={"reference_size": 300, "coarse_components": 2},
    build=_ood_queries,
    expected=(
        Expected(
            "Uniform inputs are all far off the plane (k-NN distance well above the "
            "reference's 99% conformal quantile, and beyond 1.5x it): the SPRT at H1 = 10% "
            "outliers rejects 'ordinary client' within ~12 queries; kind extraction.",
            AlertKind.EXTRACTION,
            Severity.WARNING,
            "1",
            "acct-uniform",
            after=OOD_ATTACK,
            within=30.0,
            labels={"pattern": "ood_queries", "variant": "extraction"},
        ),
        Expected(
            "The pushed inputs are outliers, but only moderately (under 1.5x the threshold) "
            "and their projection on the plane (the top 2 principal components) is natural: "
            "kind evasion.",
            AlertKind.EVASION,
            Severity.WARNING,
            "1",
            "acct-evade",
            after=EVASION_ATTACK,
            within=30.0,
            labels={"pattern": "ood_queries", "variant": "evasion"},
        ),
    ),
)

# --- sybil_steps ------------------------------------------------------------------------------

SYBIL_ATTACK = 300.0


def _smooth(rng: Rng) -> Floats:
    """A natural input: 16 smooth values in [0, 1] that differ by varied amounts everywhere."""
    return np.asarray(np.clip(rng.beta(2.0, 5.0, 16) + rng.normal(0.0, 0.05, 16), 0.0, 1.0))


def _sybil_steps(rng: Rng) -> list[Draft]:
    drafts = []
    for client in range(30):
        for at in arrivals(rng, float(rng.uniform(0.04, 0.12)), 0.0, 600.0):
            x = _smooth(rng)
            drafts.append(Draft(at, f"user-{client:02d}", int(x.argmax()), features=x.tolist()))
    # Jacobian augmentation dealt out round-robin over 8 accounts: 20 natural seeds, then each
    # query one of the ring's last 20 moved by 0.1 * sign(gradient) on every feature.
    sent: list[Floats] = []
    for i, at in enumerate(paced(SYBIL_ATTACK, 160, 1.0)):
        if len(sent) < 20:
            x = _smooth(rng)
        else:
            parent = sent[-int(rng.integers(1, 21))]
            x = np.clip(parent + 0.1 * rng.choice((-1.0, 1.0), 16), 0.0, 1.0)
        sent.append(x)
        drafts.append(Draft(at, f"ring-{i % 8}", int(x.argmax()), features=x.tolist()))
    return drafts


SYBIL_STEPS = Scenario(
    detector="sybil_steps",
    model_id="scoring-model",
    prefix="ss",
    seed=1212,
    story=(
        "10 minutes of 30 benign clients sending smooth natural 16-feature inputs in [0, 1] "
        "(~2.4/s); from minute 5 eight accounts share one Jacobian-augmentation campaign at "
        "1 query/s in all: 20 natural seeds, then sign steps of 0.1 of the ring's earlier "
        "queries, dealt out round-robin (160 queries, 20 per account)."
    ),
    # A ring of 200 recent queries and p0 learned from 300 (defaults 2048 and 5000).
    config={"ring_size": 200, "candidates": 16, "reference_queries": 300},
    build=_sybil_steps,
    expected=(
        Expected(
            "From the 21st ring query on, nearly every query is an exact sign step of another "
            "account's earlier one, where benign inputs almost never are: the pooled SPRT "
            "(H1 10x the reference rate) rejects within a few dozen of them, and the edges "
            "join at least 5 accounts. One critical sybil alert, naming a ring account.",
            AlertKind.EXTRACTION,
            Severity.CRITICAL,
            "1",
            "ring-*",
            after=SYBIL_ATTACK + 20.0,
            within=90.0,
            labels={"pattern": "sybil"},
        ),
    ),
)
