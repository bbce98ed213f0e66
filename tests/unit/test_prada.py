"""PRADA: the test statistic, d_min against brute force, calibration, attacks, replay, memory."""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from scipy import stats

from mlwarden.detectors.base import TelemetryBatch, incident_fingerprint
from mlwarden.detectors.growing_set import GrowingSet, check_distances
from mlwarden.detectors.prada import PradaConfig, PradaDetector, PradaLimits, calibrate_limits
from mlwarden.detectors.prada_calibration import tail_threshold
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.extraction_streams import (
    T0,
    attack,
    attacker_index,
    benign,
    boundary_walk,
    campaigns,
    merge,
)

ATTACKS = {"jacobian", "uniform", "boundary_walk"}  # one client each in campaigns()


def run(detector: PradaDetector, records: list[TelemetryRecord], size: int = 2000) -> list[Alert]:
    return [
        alert
        for start in range(0, len(records), size)
        for alert in detector.update(TelemetryBatch(records[start : start + size]))
    ]


@lru_cache(maxsize=1)
def calibrated() -> PradaConfig:
    """Thresholds from benign clients of the *other* half of the digits (held out)."""
    limits = calibrate_limits(
        benign(1, 60, pool="train"),
        false_alarm_rate=1e-4,
        config=PradaConfig(learn_spread_floor=True),
    )
    return PradaConfig(models=limits)


def brute_force_d_min(points: np.ndarray, labels: list[str], capacity: int) -> list[float | None]:
    """The released code's loop, written out, with G cut to its `capacity` newest points."""
    grown: list[tuple[np.ndarray, str]] = []
    stats_: dict[str, list[float]] = {}
    thresholds: dict[str, float] = {}
    out: list[float | None] = []
    for x, c in zip(points.astype(np.float32), labels, strict=True):
        same = [g for g, label in grown if label == c]
        if not same:
            grown.append((x, c))
            stats_[c], thresholds[c] = [0.0], 0.0
            out.append(None)
        else:
            d = min(
                math.sqrt(float(((g.astype(np.float64) - x.astype(np.float64)) ** 2).sum()))
                for g in same
            )
            out.append(d)
            if d > thresholds[c]:
                grown.append((x, c))
                stats_[c].append(d)
                values = np.array(stats_[c])
                thresholds[c] = max(thresholds[c], float(values.mean() - values.std()))
        grown = grown[-capacity:]
        for c in list(stats_):
            if not any(label == c for _, label in grown):
                del stats_[c], thresholds[c]
    return out


def test_shapiro_w_is_scipys_on_each_class_standardised() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.gamma(2.0, 1.0, 100), 5.0 + 3.0 * rng.gamma(2.0, 1.0, 50)
    values = np.concatenate([a, b, [40.0], rng.gamma(2.0, 1.0, 5)])
    labels = ["a"] * 100 + ["b"] * 51 + ["rare"] * 5  # "rare" has < 10 distances: left out
    check = check_distances(values, labels, min_class_distances=10, min_samples=100)
    assert check is not None
    b_all = values[100:151]
    z_a = (a - a.mean()) / a.std()
    z_b = (b_all - b_all.mean()) / b_all.std()
    assert abs(z_b[-1]) >= 3  # 40.0 is b's outlier: it goes
    assert np.all(np.abs(z_b[:-1]) < 3)
    kept_a = np.abs(z_a) < 3
    z = np.concatenate([z_a[kept_a], z_b[:-1]])
    assert check.samples == z.size == kept_a.sum() + 50
    assert check.w == pytest.approx(stats.shapiro(z).statistic, abs=1e-12)
    raw = np.concatenate([a[kept_a], b])
    assert check.spread == pytest.approx(raw.std() / raw.mean())
    assert check_distances(values[:90], labels[:90], min_samples=100) is None  # too few


def test_classes_of_different_scales_do_not_make_d_look_unnatural() -> None:
    """The root cause of PRADA's benign false alarms: a favourite class (dense G_c, small
    d_min) pooled raw with rare classes (large d_min) is a mixture, not a bell."""
    rng = np.random.default_rng(4)
    favourite = rng.normal(0.9, 0.15, 400)
    rare = [rng.normal(1.6, 0.35, 20) for _ in range(5)]
    values = np.concatenate([favourite, *rare])
    labels = ["0"] * 400 + [str(c) for c in range(1, 6) for _ in range(20)]
    pooled = values[np.abs(values - values.mean()) < 3 * values.std()]
    assert stats.shapiro(pooled).statistic < 0.9  # the paper's pooled test would alarm
    check = check_distances(values, labels)
    assert check is not None
    assert check.w is not None
    assert check.w > 0.98


def test_constant_distances_have_no_w_but_zero_spread() -> None:
    check = check_distances(np.full(120, 0.5), ["a"] * 120)
    assert check is not None
    assert check.w is None
    assert check.spread == 0.0


@pytest.mark.parametrize("chunk", [1, 7, 500])
def test_d_min_equals_brute_force_exactly_whatever_the_batching(chunk: int) -> None:
    rng = np.random.default_rng(5)
    points = rng.random((500, 16))
    points[100:140] = points[60:100] + 1e-3  # near-duplicates
    labels = [str(c) for c in rng.integers(0, 4, 500)]
    expected = brute_force_d_min(points, labels, capacity=32)
    gset = GrowingSet(16, capacity=32)
    got: list[float | None] = []
    for start in range(0, 500, chunk):
        part = points[start : start + chunk].astype(np.float32)
        got += [d for d, _ in gset.observe(part, labels[start : start + chunk])]
    assert got == expected
    restored = GrowingSet.from_state(json.loads(json.dumps(gset.state_dict())), 32)
    tail = rng.random((50, 16)).astype(np.float32)
    assert restored.observe(tail, ["1"] * 50) == gset.observe(tail, ["1"] * 50)


def test_tail_threshold_is_the_normal_prediction_bound_on_the_log_scale() -> None:
    rng = np.random.default_rng(0)
    logs = rng.normal(-3.3, 0.3, 400)
    delta = tail_threshold(1.0 - np.exp(logs), 1e-3, upper=True)
    k = stats.t.ppf(1 - 1e-3, 399) * math.sqrt(1 + 1 / 400)
    expected = 1 - math.exp(logs.mean() + k * logs.std(ddof=1))
    assert delta == pytest.approx(expected, abs=3e-3)  # clipping moves σ̂ a little
    assert tail_threshold([0.2, 0.25, 0.3] * 10, 1e-3, upper=False) < 0.2


def test_a_new_benign_client_falls_beyond_the_bound_at_the_target_rate() -> None:
    """The prediction bound, unlike the plug-in quantile, keeps its rate for small samples."""
    rng = np.random.default_rng(1)
    alpha, n, trials = 0.02, 40, 4000
    beyond = 0
    for _ in range(trials):
        minima = 1.0 - np.exp(rng.normal(-3.0, 0.4, n + 1))
        beyond += minima[-1] < tail_threshold(minima[:-1], alpha, upper=True)
    # Binomial(4000, 0.02): sd 0.0022; the plug-in z-quantile gives 0.025 here.
    assert abs(beyond / trials - alpha) < 0.0045


def test_attackers_among_the_clients_barely_move_the_fit() -> None:
    rng = np.random.default_rng(2)
    benign_minima = 1.0 - np.exp(rng.normal(-3.3, 0.35, 37))
    attackers = [0.62, 0.7, 0.78]  # extraction clients learned from by mistake
    clean = tail_threshold(benign_minima, 5e-4, upper=True)
    dirty = tail_threshold([*benign_minima, *attackers], 5e-4, upper=True)
    assert abs(dirty - clean) < 0.01
    logs = np.log(1 - np.array([*benign_minima, *attackers]))
    plain = 1 - math.exp(logs.mean() + 3.29 * logs.std())
    assert plain < clean - 0.1  # what mean and std alone would have done


def test_calibration_from_benign_clients_lies_in_the_papers_range() -> None:
    limits = calibrated().models["digits"]
    # The paper's δ lie in 0.87–0.96; digits' natural distances sit at the low end.
    assert 0.85 < limits.delta < 0.93
    assert 0.1 < limits.min_relative_spread < 0.25


def test_attacks_are_caught_within_200_queries_and_benign_clients_never() -> None:
    records = merge(benign(2, 60), *campaigns().values())
    alerts = run(PradaDetector(calibrated()), records)
    by_client = {alert.client_id: alert for alert in alerts}
    # No benign alarm; the ring's 20 ids send 20 queries each: too few for PRADA per client.
    assert set(by_client) == ATTACKS, [a.summary for a in alerts]
    assert len(alerts) == len(ATTACKS)  # one per incident
    queries_to_detect = {
        name: attacker_index(alert.evidence["sample_event_ids"][-1])
        for name, alert in by_client.items()
    }
    print("PRADA queries to detect:", queries_to_detect)
    assert all(n <= 200 for n in queries_to_detect.values()), queries_to_detect
    trigger = {name: alert.evidence["trigger"] for name, alert in by_client.items()}
    assert trigger == {
        "jacobian": "shapiro_wilk",
        "boundary_walk": "shapiro_wilk",
        "uniform": "distance_concentration",  # i.i.d. noise looks normal to Shapiro–Wilk
    }
    alert = by_client["jacobian"]
    assert alert.kind is AlertKind.EXTRACTION
    assert alert.detector == "prada"
    first = f"jacobian-q-{queries_to_detect['jacobian'] - 1}"
    assert alert.fingerprint == incident_fingerprint("prada", "digits", "jacobian", first)
    assert alert.evidence["shapiro_w"] < alert.evidence["delta"] == alert.threshold
    assert len(alert.evidence["sample_event_ids"]) == 5


def test_a_new_incident_only_after_a_quiet_period() -> None:
    cfg = PradaConfig(incident_quiet_seconds=600, models=calibrated().models)
    queries = boundary_walk(21, 400)
    first = attack("w", queries[:300], start=T0)
    resumed = attack("w", queries[300:], start=first[-1].timestamp + 1200, seed=1)
    resumed = [r.model_copy(update={"event_id": f"w-late-{i}"}) for i, r in enumerate(resumed)]
    alerts = run(PradaDetector(cfg), first + resumed)
    assert len(alerts) == 2
    assert alerts[0].fingerprint != alerts[1].fingerprint


def walk_and_benign() -> list[TelemetryRecord]:
    return merge(benign(4, 6, lengths=(150, 200)), attack("walk", boundary_walk(8, 200)))


@pytest.mark.parametrize(
    "config",
    [PradaConfig(), PradaConfig(growing_set_size=16, idle_seconds=30, test_every=3)],
    ids=["defaults", "tiny-G-short-idle"],  # the second evicts and restarts clients a lot
)
def test_batch_size_does_not_change_alerts(config: PradaConfig) -> None:
    records = walk_and_benign()
    one_by_one = run(PradaDetector(config), records, size=1)
    assert one_by_one
    for size in (37, len(records)):
        assert run(PradaDetector(config), records, size=size) == one_by_one


def test_state_round_trip_mid_attack_resumes_exactly() -> None:
    records = walk_and_benign()
    middle = next(i for i, r in enumerate(records) if r.event_id == "walk-q-100")
    whole = PradaDetector()
    expected = run(whole, records[:middle]) + run(whole, records[middle:])
    first = PradaDetector()
    head = run(first, records[:middle])
    saved = json.dumps(first.state_dict(), allow_nan=False)  # plain JSON: no NaN, no numpy
    resumed = PradaDetector()
    resumed.load_state_dict(json.loads(saved))
    assert head + run(resumed, records[middle:]) == expected
    assert expected


def test_memory_is_bounded_per_client_and_idle_clients_go() -> None:
    cfg = PradaConfig(growing_set_size=64, distance_window=200, idle_seconds=600)
    detector = PradaDetector(cfg)
    long_client = attack("long", np.random.default_rng(1).random((3000, 64)), rate=10)
    run(detector, long_client)
    state = json.dumps(detector.state_dict())
    # 64 float32 points of 64 features + 200 float64 distances, base64: ~24 kB.
    assert len(state) < 30_000
    one_offs = [
        TelemetryRecord(
            event_id=f"o{i}",
            timestamp=long_client[-1].timestamp + 10 * i,
            model_id="digits",
            model_version="1",
            client_id=f"one-off-{i}",
            features=[0.5] * 64,
            prediction=0,
        )
        for i in range(5000)
    ]
    run(detector, one_offs)
    assert detector.tracked_clients <= 61  # only those seen in the last 600 s
    assert len(json.dumps(detector.state_dict())) < 50_000


def test_featureless_records_are_ignored_and_new_widths_start_over() -> None:
    detector = PradaDetector()
    bare = [
        TelemetryRecord(
            event_id=f"b{i}",
            timestamp=T0 + i,
            model_id="m",
            model_version="1",
            client_id="c",
            prediction=0,
            input_hash="h",
        )
        for i in range(300)
    ]
    assert run(detector, bare) == []
    assert detector.tracked_clients == 0
    walk = attack("c", boundary_walk(3, 150), start=T0)
    narrow = [r.model_copy(update={"features": r.features[:32]}) for r in walk[75:]]  # type: ignore[index]
    assert run(detector, walk[:75] + narrow) == []  # each width has < 100 distances


def test_per_model_thresholds_apply() -> None:
    cfg = PradaConfig(models={"digits": PradaLimits(delta=0.01, min_relative_spread=0.0)})
    assert run(PradaDetector(cfg), attack("w", boundary_walk(5, 300))) == []
    assert Counter(
        a.client_id for a in run(PradaDetector(), attack("w", boundary_walk(5, 300)))
    ) == {"w": 1}
