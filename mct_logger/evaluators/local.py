"""`Local()`: the default evaluator, every evaluation in this process, in order.

The workspace is the sweep's own (`Sweep.local()`): the driver's models, never
serialized, so a local run is the library's in-process behaviour.

Example:

```python
with Local().open(sweep) as session:
    for job, score in session.evaluate(jobs):
        ...
```
"""

from __future__ import annotations

import contextlib

from mct_logger.evaluators.jobs import call_job


class Local:
    """Evaluates in this process, one job after another, in the order given."""

    def open(self, sweep, jobs_hint: int | None = None) -> "_LocalSession":
        return _LocalSession(sweep)

    def workers(self):
        """Nothing to start ahead: the evaluations run in this process."""
        return contextlib.nullcontext(self)

    def __repr__(self) -> str:
        return "Local()"


class _LocalSession:
    def __init__(self, sweep):
        self.sweep = sweep
        self.workspace = None

    def evaluate(self, jobs):
        """Yields `(job, score)` for each job, in order."""
        for job in jobs:
            if self.workspace is None:
                self.workspace = self.sweep.local()
            yield job, call_job(self.workspace, job)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.workspace = None
        return False
