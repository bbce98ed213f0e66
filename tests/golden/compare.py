"""Golden alerts against fresh ones: what must match exactly, what to a tolerance, and a diff
a person can read.

Everything is compared exactly — identity (detector, kind, severity, model, version, client,
fingerprint, alert id, labels), `detected_at`, the summary, the event ids in the evidence —
except numbers under `score`, `threshold` and `evidence`, which may differ by a relative
1e-6: the detectors' statistics go through BLAS, LAPACK and torch, whose last bits can vary
between machines, while a behaviour change moves them far more than that.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from tests.golden.spec import Golden

RELATIVE = 1e-6
ABSOLUTE = 1e-12  # for statistics that are 0 up to rounding
_TOLERANT = ("score", "threshold", "evidence")


def read_alerts(path: Path) -> list[Golden]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dump_alerts(alerts: list[Golden]) -> str:
    return "".join(json.dumps(a, sort_keys=True, ensure_ascii=False) + "\n" for a in alerts)


def headline(alert: Golden) -> str:
    """One line that identifies an alert: what fired, about whom, when, which incident."""
    who = alert["client_id"] if alert["client_id"] is not None else "(model-wide)"
    labels = ",".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()))
    return (
        f"{alert['detector']} {alert['kind']}/{alert['severity']} "
        f"{alert['model_id']} v{alert['model_version']} {who} at {alert['detected_at']}"
        f"{' [' + labels + ']' if labels else ''} fingerprint {alert['fingerprint'][:12]}"
    )


def _numbers(expected: Any, got: Any) -> bool:
    numeric = (int, float)
    return (
        isinstance(expected, numeric)
        and isinstance(got, numeric)
        and not isinstance(expected, bool)
        and not isinstance(got, bool)
    )


def _walk(path: str, expected: Any, got: Any, tolerant: bool, out: list[str]) -> None:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"{where}: missing (expected {expected[key]!r})")
            elif key not in expected:
                out.append(f"{where}: unexpected {got[key]!r}")
            else:
                inner = tolerant or (not path and key in _TOLERANT)
                _walk(where, expected[key], got[key], inner, out)
        return
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            out.append(f"{path}: {len(got)} items, expected {len(expected)}: {got!r}")
            return
        for index, (e, g) in enumerate(zip(expected, got, strict=True)):
            _walk(f"{path}[{index}]", e, g, tolerant, out)
        return
    if tolerant and _numbers(expected, got):
        if not math.isclose(expected, got, rel_tol=RELATIVE, abs_tol=ABSOLUTE):
            scale = max(abs(expected), abs(got))
            off = abs(expected - got) / scale if scale else 0.0
            out.append(f"{path}: {got!r}, expected {expected!r} (relative difference {off:.2g})")
        return
    if type(expected) is not type(got) or expected != got:
        out.append(f"{path}: {got!r}, expected {expected!r}")


def field_differences(expected: Golden, got: Golden) -> list[str]:
    """Every field of `got` that differs from `expected` (numbers under `_TOLERANT` within
    the tolerance), as `dotted.path: got, expected ...` lines."""
    out: list[str] = []
    _walk("", expected, got, False, out)
    return out


def differences(expected: list[Golden], got: list[Golden]) -> list[str]:
    """A readable account of how `got` differs from `expected`; empty when it matches.

    First the alert list itself (a diff of headlines: alerts missing, added, or changed in
    identity), then field by field for each pair of alerts: pairs share a fingerprint, and
    alerts left over are paired in order.
    """
    lines: list[str] = []
    heads_e, heads_g = [headline(a) for a in expected], [headline(a) for a in got]
    if heads_e != heads_g:
        lines.append(f"alerts: {len(got)} now, {len(expected)} in the golden file")
        lines += [
            f"  {line}"
            for line in difflib.unified_diff(heads_e, heads_g, "golden", "now", lineterm="", n=9)
            if not line.startswith(("---", "+++", "@@"))
        ]
    by_fingerprint = {a["fingerprint"]: i for i, a in enumerate(got)}
    paired: list[tuple[int, int]] = []
    for i, alert in enumerate(expected):
        j = by_fingerprint.get(alert["fingerprint"])
        if j is not None:
            paired.append((i, j))
    left_e = [i for i in range(len(expected)) if i not in {p[0] for p in paired}]
    left_g = [j for j in range(len(got)) if j not in {p[1] for p in paired}]
    paired += list(zip(left_e, left_g, strict=False))
    for i, j in sorted(paired):
        changed = field_differences(expected[i], got[j])
        if changed:
            lines.append(f"golden alert #{i} vs alert #{j} now ({headline(expected[i])}):")
            lines += [f"  {line}" for line in changed]
    return lines
