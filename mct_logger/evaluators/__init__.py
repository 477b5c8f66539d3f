"""Evaluators: where a sweep's evaluations run, and the record that makes them resumable.

Every analysis that answers "which layer?" is a sweep of independent
evaluations of the user's `eval_callback`: the QuantAnalyzer's 4 + 2 x layers
(sensitivity, per-layer enabled/disabled), the verified steps of
`search_mixed_precision`, `compress_model`'s layers x ratios. With N workers
and evaluations of t seconds each, a sweep of E evaluations takes about

    T(N) ~= T_start + ceil(E / N) * t        (T_start: workers rebuilding the simulation)

- `Local()`, the default: every evaluation in this process (today's behaviour);
- `Ray(address=None, num_workers=None, num_cpus_per_worker=1,
  num_gpus_per_worker=0)`: Ray actors, on this machine or a cluster, each
  rebuilding the quantization simulation once from what the driver ships;
- `records.ScoreRecords`: every finished evaluation in a JSON file as it
  finishes, keyed by what determines it (the model's fingerprint, the config,
  the mask or candidate), so a killed sweep resumes and evaluates only what
  is missing; a record of another model or config is refused.

Ray is imported only when a `Ray` evaluator starts a sweep:
`pip install "mct-logger[ray]"` adds it.

Example:

```python
from mct_logger import evaluators
analyzer = QuantAnalyzer(model, calibrate, evaluate, evaluator=evaluators.Ray(num_workers=4))
result = analyzer.analyze(config, results_dir="qa", resume=True)
```
"""

from mct_logger.evaluators.jobs import EvaluationFailed, Job, Sweep, run_jobs
from mct_logger.evaluators.local import Local
from mct_logger.evaluators.ray_workers import Ray
from mct_logger.evaluators.records import ScoreRecords, fingerprint, model_fingerprint

__all__ = ["EvaluationFailed", "Job", "Local", "Ray", "ScoreRecords", "Sweep", "fingerprint",
           "model_fingerprint", "run_jobs", "check_evaluator"]


def check_evaluator(evaluator, what: str = "evaluator"):
    """`evaluator`, or `Local()` for None; TypeError for anything else."""
    if evaluator is None:
        return Local()
    if not all(callable(getattr(evaluator, m, None)) for m in ("open", "workers")):
        raise TypeError(f"{what} must be mct_logger.evaluators.Local() or "
                        f"mct_logger.evaluators.Ray(...); got {type(evaluator).__name__}.")
    return evaluator
