"""Evaluation jobs, the sweeps that hold them, and the one loop that runs them.

A sweep (the QuantAnalyzer's per-layer masks, the mixed-precision search's bit
widths, `compress_model`'s candidates) is many independent evaluations of the
user's `eval_callback`, each on one variant of one quantization simulation:

- `Job(key, spec, what)`: `key`, a tuple of strings, names the evaluation in
  the record file and orders the results; `spec` tells the workspace which
  variant to set up (a quantizer mask, a config, a layer and ratio); `what`
  is the human name used in messages ("the model with conv1 alone quantized");
- `Sweep`: how to get a *workspace*, the object whose `evaluate(spec) ->
  float` sets a variant up and calls the callback: `local()` builds it from
  the driver's live objects; `factory(shipment, eval_callback)` (a module-level
  function, so it travels by reference) rebuilds it on a worker from
  `shipment()`, plain data and `.keras` bytes;
- `run_jobs(session, jobs, records, on_result)`: reuses the scores already
  recorded, gives the missing jobs to the evaluator's session, records each
  score as it arrives (`records.ScoreRecords`), tells `on_result`, and returns
  every score in job order, whatever order they finished in.

An exception raised while a job is evaluated keeps its type and gets the note
"raised while evaluating <what>", the same on every evaluator.

Example:

```python
sweep = Sweep("QuantAnalyzer", local=lambda: workspace, factory=rebuild,
              shipment=lambda: {"sim": model_to_bytes(sim)}, eval_callback=evaluate)
with evaluator.open(sweep, jobs_hint=len(jobs)) as session:
    scores = run_jobs(session, jobs, records, on_result=publish)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mct_logger.utils import liveness


@dataclasses.dataclass(frozen=True)
class Job:
    """One evaluation: `key` (tuple of str, its record key), `spec` (the variant,
    small and picklable) and `what` (its name in messages)."""

    key: tuple
    spec: Any
    what: str


@dataclasses.dataclass
class Sweep:
    """How a sweep's workspace is built, in process (`local`) or on a worker
    (`factory(shipment(), eval_callback)`)."""

    name: str
    local: Callable[[], Any]
    factory: Callable[[dict, Any], Any]
    shipment: Callable[[], dict]
    eval_callback: Any


class EvaluationFailed(RuntimeError):
    """An evaluation could not be finished (its workers kept dying); the scores
    finished before are kept in the sweep's record."""


def note_of(job: Job) -> str:
    return f"raised while evaluating {job.what}"


def call_job(workspace, job: Job) -> float:
    """`workspace.evaluate(job.spec)`; an exception gets `note_of(job)`. A SIGTERM
    or SIGINT during it stops the sweep when it returns (`liveness.deferred_interrupt`)."""
    try:
        with liveness.deferred_interrupt():
            return workspace.evaluate(job.spec)
    except Exception as exc:
        if note_of(job) not in getattr(exc, "__notes__", ()):
            exc.add_note(note_of(job))
        raise


def run_jobs(session, jobs: list, records=None, on_result: Callable | None = None) -> dict:
    """Every job's score, in job order: recorded ones reused, the others evaluated.

    Args:
        session: an evaluator's open session (`Local().open(...)`, `Ray().open(...)`).
        jobs: the `Job`s.
        records: a `ScoreRecords` (None: nothing reused or recorded).
        on_result: `(job, score, reused)` called for each score, reused ones
            first, then as evaluations finish (in any order).

    Returns:
        `{job.key: score}` in the order of `jobs`.
    """
    scores, missing = {}, []
    for job in jobs:
        held = None if records is None else records.get(job.key)
        if held is None:
            missing.append(job)
            continue
        scores[job.key] = held
        if on_result is not None:
            on_result(job, held, True)
    for job, score in session.evaluate(missing):
        score = float(score)
        if records is not None:
            records.put(job.key, score)
        scores[job.key] = score
        if on_result is not None:
            on_result(job, score, False)
    return {job.key: scores[job.key] for job in jobs}
