"""Evaluation: the same scripted callers on several pipelines, compared fairly and in pairs.

``cascade eval SUITE.yaml --system a=cascade.yaml --system b=fused.yaml --out results/``

In reading order:

* ``scenarios``   - the suite YAML: scenarios of caller events and expected outcomes.
* ``voices``      - the caller's voice: any TTS adapter, cached on disk by content hash.
* ``g711``/``audio_build`` - one caller track per scenario (pauses, barge-ins,
                    backchannels, noise at an SNR, telephone line), identical for all.
* ``systems``     - ``NAME=pipeline.yaml`` specs, declared prices, config hashes.
* ``runner``      - every track on every system: warm-up, seeded order, one call at a time.
* ``measure``     - per-event metrics from the spans against the track's ground truth.
* ``outcomes``    - expected-outcome checks, verdicts, task success (and a judge hook).
* ``stats``       - paired differences, bootstrap intervals, who wins.
* ``report``/``plots`` - results.json, report.md and the PNGs.
* ``command``     - ``run_evaluation``, what the CLI calls.

See ``docs/evaluation.md``.
"""
