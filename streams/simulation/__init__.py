"""Attack simulator: realistic telemetry of a digits classifier under attack, with ground truth.

`mlwarden simulate SCENARIO --out run.jsonl [--seed N] [--duration S]` writes canonical
telemetry (`schemas/telemetry.py`) and `run.truth.json`; `benchmarks/detection.py` scores
every registered detector against every scenario. From Python::

    from mlwarden.streams.simulation.simulator import simulate
    from mlwarden.streams.simulation.writer import write_simulation

    run = simulate("extraction-jacobian", seed=7, duration_s=3600)
    write_simulation(run, Path("run.jsonl"))      # or: for record in run: ...

Modules, each with one job:

- `catalogue`: the scenario names (light: no torch, for the command line)
- `traffic`: query blocks, seeded sub-generators, paced arrival processes
- `model`: the production model (an MLP on scikit-learn's digits), training, poisoning
- `benign`: the benign population (heavy-tailed, bursty, diurnal, favourite classes)
- `transforms`: natural variation, covariate drift, out-of-distribution images
- `campaign`: the metered oracle that adaptive attacks query
- `extraction`, `boundary`, `evasion`: the attacks, each citing its paper
- `scenarios`: the registry of scenarios and what should detect each
- `simulator`: `simulate()`; `truth`: the ground-truth file; `writer`: the files on disk
- `scoring`: alerts against ground truth (detections, false alarms, time to detect)

This package imports nothing heavy itself: import the module you need.
"""
