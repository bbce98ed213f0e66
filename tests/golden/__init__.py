"""Golden streams: one small seeded telemetry stream per registered detector, with the alerts
it must raise (`tests/data/golden/`, checked by `tests/unit/test_golden_streams.py`).

- `streams`: arrivals, probability vectors, records, JSONL
- `spec`: what a golden stream is (`Scenario`, `Expected`), replay, the design check
- `per_client`, `per_model`: the streams, each with the alerts it is designed to raise and why
- `scenarios`: all of them by detector name
- `compare`: golden alerts against fresh ones, with a readable diff
- `generate`: `python -m tests.golden.generate [--update] [DETECTOR ...]`
"""
