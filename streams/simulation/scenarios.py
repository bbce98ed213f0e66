"""Every scenario by name: what it adds to benign traffic, and what should detect it.

A scenario is a `plan` function from the run's `Setting` (seed, window, data, production model,
unused account ids) to a `Plan`: attacker query blocks, model rollouts, or a drift of the benign
inputs. The simulator adds the benign population and does everything else, so a new scenario
is one function and one registry entry.

Attackers pace themselves like real tools: a few queries per second from one account (under
the default query budget of 10/s, so rate limits alone do not catch them), and the sybil
campaign at a benign account's rate. Account ids come from the same id space as benign
clients; nothing but behaviour tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np

from mlwarden.schemas.alert import AlertKind
from mlwarden.streams.simulation import campaign, extraction
from mlwarden.streams.simulation.boundary import hop_skip_jump
from mlwarden.streams.simulation.catalogue import ScenarioName
from mlwarden.streams.simulation.evasion import adversarial_queries
from mlwarden.streams.simulation.model import Classifier, DigitsData, LabelFlip, ModelSpec
from mlwarden.streams.simulation.traffic import (
    FloatArray,
    Queries,
    child_rng,
    derived_seed,
    round_robin,
    scripted_arrivals,
    single_client,
)
from mlwarden.streams.simulation.truth import AlertScope

ATTACK_RATE_PER_S: Final = 3.0
SYBIL_ACCOUNTS: Final = 30
GRADUAL_DRIFT_RAMP_S: Final = 1800.0
EVASION_CLIENTS: Final = (("fgsm", 0.5), ("pgd", 0.8), ("pgd", 1.0))
"""(method, queries/s) of each evading client."""

PAPERNOT_2017: Final = (
    "Papernot et al., Practical Black-Box Attacks against Machine Learning, AsiaCCS 2017"
)
TRAMER_2016: Final = (
    "Tramèr et al., Stealing Machine Learning Models via Prediction APIs, USENIX Security 2016"
)
OREKONDY_2019: Final = (
    "Orekondy et al., Knockoff Nets: Stealing Functionality of Black-Box Models, CVPR 2019"
)
HSJA_2020: Final = (
    "Chen et al., HopSkipJumpAttack: A Query-Efficient Decision-Based Attack, IEEE S&P 2020"
)
PRADA_2019: Final = (
    "Juuti et al., PRADA: Protecting Against DNN Model Stealing Attacks, EuroS&P 2019"
)
FGSM_2015: Final = "Goodfellow et al., Explaining and Harnessing Adversarial Examples, ICLR 2015"
PGD_2018: Final = (
    "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
)
SHIFT_2019: Final = "Rabanser et al., Failing Loudly: Detecting Dataset Shift, NeurIPS 2019"
POISON_2012: Final = "Biggio et al., Poisoning Attacks against Support Vector Machines, ICML 2012"


@dataclass(frozen=True, slots=True)
class Setting:
    """What a scenario's plan is drawn from."""

    seed: int
    start_ts: float
    end_ts: float
    attack_start_ts: float
    data: DigitsData
    production: Classifier
    spare_accounts: list[str]
    """Account ids no benign client uses, in the same format; attackers take them in order."""

    def rng(self, *names: str) -> np.random.Generator:
        return child_rng(self.seed, "scenario", *names)

    def oracle(self, inputs: FloatArray) -> FloatArray:
        return self.production.probabilities(inputs)


@dataclass(frozen=True, slots=True)
class Rollout:
    """From `at_ts` on, every query is served by `spec` under the label `version`."""

    version: str
    at_ts: float
    spec: ModelSpec


@dataclass(frozen=True, slots=True)
class Drift:
    """Benign inputs shift towards a new capture pipeline from `start_ts`, over `ramp_s`."""

    start_ts: float
    ramp_s: float

    def severity(self, timestamps: FloatArray) -> FloatArray:
        if self.ramp_s <= 0.0:
            return (timestamps >= self.start_ts).astype(np.float64)
        return np.clip((timestamps - self.start_ts) / self.ramp_s, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Plan:
    attacks: tuple[Queries, ...] = ()
    attackers: tuple[str, ...] = ()
    rollouts: tuple[Rollout, ...] = ()
    drift: Drift | None = None
    parameters: dict[str, str | float | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: ScenarioName
    summary: str
    attack_kind: str | None
    expected_alert_kinds: tuple[AlertKind, ...]
    scope: AlertScope
    references: tuple[str, ...]
    plan: Callable[[Setting], Plan]


CampaignFactory = Callable[[Setting, np.random.Generator], campaign.Campaign]


def _campaign(factory: CampaignFactory, *, sybil: bool = False) -> Callable[[Setting], Plan]:
    """One adaptive or scripted campaign at ATTACK_RATE_PER_S, from one account or many."""

    def plan(setting: Setting) -> Plan:
        rng = setting.rng("campaign")
        times = scripted_arrivals(rng, setting.attack_start_ts, setting.end_ts, ATTACK_RATE_PER_S)
        features = campaign.run(factory(setting, rng), setting.oracle, len(times))
        times = times[: len(features)]
        if sybil:
            accounts = setting.spare_accounts[:SYBIL_ACCOUNTS]
            block = round_robin(times, accounts, features)
        else:
            accounts = setting.spare_accounts[:1]
            block = single_client(times, accounts[0], features)
        parameters: dict[str, str | float | int] = {
            "rate_per_s": ATTACK_RATE_PER_S,
            "accounts": len(accounts),
            "per_account_rate_per_s": ATTACK_RATE_PER_S / len(accounts),
        }
        return Plan(attacks=(block,), attackers=tuple(accounts), parameters=parameters)

    return plan


def _evasion(setting: Setting) -> Plan:
    blocks: list[Queries] = []
    accounts = setting.spare_accounts[: len(EVASION_CLIENTS)]
    for account, (method, rate) in zip(accounts, EVASION_CLIENTS, strict=True):
        rng = setting.rng("evasion", account)
        times = scripted_arrivals(rng, setting.attack_start_ts, setting.end_ts, rate)
        features = adversarial_queries(setting.production, setting.data, rng, len(times), method)
        blocks.append(single_client(times, account, features))
    parameters: dict[str, str | float | int] = {
        f"{account}": f"{method} at {rate}/s"
        for account, (method, rate) in zip(accounts, EVASION_CLIENTS, strict=True)
    }
    return Plan(attacks=tuple(blocks), attackers=tuple(accounts), parameters=parameters)


def _rollout(poisoning: LabelFlip | None) -> Callable[[Setting], Plan]:
    def plan(setting: Setting) -> Plan:
        spec = ModelSpec(derived_seed(setting.seed, "retrain"), poisoning)
        return Plan(rollouts=(Rollout("2", setting.attack_start_ts, spec),))

    return plan


def _drift(ramp_s: float) -> Callable[[Setting], Plan]:
    def plan(setting: Setting) -> Plan:
        ramp = min(ramp_s, setting.end_ts - setting.attack_start_ts)
        return Plan(drift=Drift(setting.attack_start_ts, ramp), parameters={"ramp_s": ramp})

    return plan


def _benign(setting: Setting) -> Plan:
    return Plan()


_EXTRACTION: Final = (AlertKind.EXTRACTION,)
_MODEL_HEALTH: Final = (AlertKind.DRIFT, AlertKind.CONFIDENCE_SHIFT)

_ALL: Final = (
    Scenario(ScenarioName.BENIGN, "benign traffic only", None, (), AlertScope.NONE, (), _benign),
    Scenario(
        ScenarioName.BENIGN_ROLLOUT,
        "version 2 (same data, another seed) rolls out at the start time",
        None,
        (),
        AlertScope.NONE,
        (),
        _rollout(None),
    ),
    Scenario(
        ScenarioName.EXTRACTION_JACOBIAN,
        "Jacobian-based dataset augmentation from one account",
        "extraction",
        _EXTRACTION,
        AlertScope.CLIENT,
        (PAPERNOT_2017, PRADA_2019),
        _campaign(lambda s, rng: extraction.jacobian_augmentation(s.data, rng)),
    ),
    Scenario(
        ScenarioName.EXTRACTION_RANDOM,
        "uniform random inputs from one account",
        "extraction",
        _EXTRACTION,
        AlertScope.CLIENT,
        (TRAMER_2016,),
        _campaign(lambda s, rng: extraction.uniform_random(rng)),
    ),
    Scenario(
        ScenarioName.EXTRACTION_NATURAL_OOD,
        "natural out-of-distribution images from one account",
        "extraction",
        _EXTRACTION,
        AlertScope.CLIENT,
        (OREKONDY_2019,),
        _campaign(lambda s, rng: extraction.natural_out_of_distribution(s.data, rng)),
    ),
    Scenario(
        ScenarioName.BOUNDARY_PROBING,
        "HopSkipJump-style boundary walk from one account",
        "boundary-probing",
        (AlertKind.EXTRACTION, AlertKind.EVASION),
        AlertScope.CLIENT,
        (HSJA_2020,),
        _campaign(lambda s, rng: hop_skip_jump(s.data, rng)),
    ),
    Scenario(
        ScenarioName.SYBIL_EXTRACTION,
        f"Jacobian augmentation split round-robin over {SYBIL_ACCOUNTS} new accounts",
        "extraction",
        _EXTRACTION,
        AlertScope.CLIENT,
        (PAPERNOT_2017, PRADA_2019),
        _campaign(lambda s, rng: extraction.jacobian_augmentation(s.data, rng), sybil=True),
    ),
    Scenario(
        ScenarioName.DRIFT_SUDDEN,
        "benign inputs switch to a low-contrast, noisy capture pipeline at the start time",
        "drift",
        _MODEL_HEALTH,
        AlertScope.MODEL,
        (SHIFT_2019,),
        _drift(0.0),
    ),
    Scenario(
        ScenarioName.DRIFT_GRADUAL,
        "the same input shift, ramped in over 30 minutes",
        "drift",
        _MODEL_HEALTH,
        AlertScope.MODEL,
        (SHIFT_2019,),
        _drift(GRADUAL_DRIFT_RAMP_S),
    ),
    Scenario(
        ScenarioName.EVASION,
        "FGSM and PGD adversarial examples from three accounts",
        "evasion",
        (AlertKind.EVASION,),
        AlertScope.CLIENT,
        (FGSM_2015, PGD_2018),
        _evasion,
    ),
    Scenario(
        ScenarioName.POISONED_ROLLOUT,
        "version 2, trained on label-flipped data, rolls out at the start time",
        "poisoning",
        (AlertKind.CONFIDENCE_SHIFT, AlertKind.DRIFT),
        AlertScope.MODEL,
        (POISON_2012,),
        _rollout(LabelFlip()),
    ),
)

SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType({str(s.name): s for s in _ALL})
