"""The steps of one mixed-precision search: which bit-width choices it scores,
in what order, and the steps table they fill (`search_mixed_precision`).

Within a budget: every uniform width that fits, then the frontier's choice of
least predicted noise, `sum_l 10^(-SQNR_l(b_l)/10)` (additive noise power,
the output SQNR being `-10 log10` of it); the mixed choice is kept only if it
predicts at least `MIN_GAIN_DB` more than the widest uniform width and scores
above every uniform one (a tie goes to uniform). For a target (float score
minus `max_accuracy_drop`): a bisection over the frontier's points, ordered by
memory, for the smallest that meets it. Scores are jobs on the evaluator's
session (independent ones at once), checked by `ScoreCheck`: a NaN/Inf is kept
as missing and compares below every number (`comparable`).

Example:

```python
steps = SearchSteps(graph, config, session, records, evaluate, units, [4, 8], costs,
                    mems, fixed, budget)
choice = steps.by_budget(frontier)        # one index into the widths per layer
config = steps.config_of(choice)
```
"""

from __future__ import annotations

import collections
import dataclasses
import logging

from mct_logger.diagnostics import metrics
from mct_logger.evaluators import Job, run_jobs
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.plan import plan_quantization
from mct_logger.mixed_precision.search_units import override_key, unit_settings
from mct_logger.utils.callbacks import ScoreCheck, comparable

__all__ = ["SearchSteps", "MIN_GAIN_DB"]

logger = logging.getLogger("mct_logger")

# A mixed choice within a budget replaces the widest uniform width that fits
# only if the additive model predicts at least this much more output SQNR (a
# sixth of a bit; less is within the model's error, and uniform is simpler).
MIN_GAIN_DB = 1.0


class SearchSteps:
    """The evaluations of one search and the steps table they fill.

    Args:
        graph: the prepared float `Graph`; `config`: the QuantizationConfig searched.
        session: an open evaluator session on the search's `TrialWorkspace`
            (specs `("float", None)` and `("trial", config)`).
        records: a `ScoreRecords` (None: nothing reused or recorded).
        evaluate: the eval callback (None: only predicted SQNR, no score).
        units, candidates: the searched `SearchUnit`s (layers, or a composite's
            sublayer groups) and the bit widths, ascending.
        costs, mems: `(layers, widths)` arrays, predicted noise power and bytes.
        fixed: bytes of weights not searched; budget: bytes, or None.

    Raises:
        ValueError: the float model's score is NaN or infinite (`ScoreCheck`).
    """

    def __init__(self, graph, config, session, records, evaluate, units, candidates, costs,
                 mems, fixed, budget):
        self.graph, self.config, self.candidates = graph, config, candidates
        self.units, self.names = list(units), [u.name for u in units]
        self.costs, self.mems, self.fixed, self.budget = costs, mems, fixed, budget
        self.session, self.records = session, records
        self.check = ScoreCheck("eval_callback")  # NaN/Inf: refused for float, else missing
        self.evaluate = evaluate
        self.evaluations = 0  # evaluations run or reused (the float model's included)
        self.target = None
        self.steps: list[dict] = []
        self.scores: dict[tuple, float] = {}
        self.float_score = None
        if evaluate is not None:
            job = Job(("float",), ("float", None), "the float model")
            self.float_score = self._run([job])[job.key]

    def _run(self, jobs) -> dict:
        """Scores of `jobs`, checked by the shared rule (`ScoreCheck`): the float
        model's must be finite; a later NaN/Inf is kept as missing, warned once."""
        self.evaluations += len(jobs)
        scores = run_jobs(self.session, jobs, self.records)
        return {job.key: self.check(scores[job.key], job.what, reference=job.key == ("float",))
                for job in jobs}

    def prefetch(self, choices) -> None:
        """Scores every choice not scored yet, at once (on several workers)."""
        todo = {tuple(c): None for c in choices if tuple(c) not in self.scores}
        jobs = [Job(("trial", ",".join(str(self.candidates[k]) for k in key)),
                    ("trial", self.config_of(list(key))),
                    "the config with weight bits " + ", ".join(
                        f"{n}={self.candidates[k]}" for n, k in zip(self.names, key)))
                for key in todo]
        for key, score in zip(todo, self._run(jobs).values()):
            self.scores[key] = score

    def memory_of(self, choice) -> int:
        return int(self.fixed + sum(self.mems[i, k] for i, k in enumerate(choice)))

    def score_of(self, choice):
        return self.scores.get(tuple(choice))

    def config_of(self, choice) -> QuantizationConfig:
        bits = [self.candidates[k] for k in choice]
        common = max(collections.Counter(bits).items(), key=lambda kv: (kv[1], kv[0]))[0]
        base = dataclasses.replace(self.config, weight_bits=common)
        overrides = dict(self.config.overrides)
        for unit, b in zip(self.units, bits):
            if unit_settings(base, unit)[0]["weight_bits"] != b:
                key = override_key(unit)
                # an override the user keyed by this name keeps every other field
                overrides[key] = dataclasses.replace(overrides[key], weight_bits=b) \
                    if key in overrides else LayerOverride(weight_bits=b)
        chosen = dataclasses.replace(base, overrides=overrides)
        planned = plan_quantization(self.graph, chosen, report=False)
        for unit, b in zip(self.units, bits):
            weights = planned[unit.node].weights
            if any(weights[k].bitwidth != b for k in unit.kernels if k in weights):
                raise RuntimeError(f"The chosen config does not give {unit.name!r} {b} bits.")
        return chosen

    def step(self, label: str, choice, evaluate: bool) -> dict:
        key = tuple(choice)
        if evaluate and self.evaluate is not None and key not in self.scores:
            self.prefetch([choice])
        memory = self.memory_of(choice)
        score = self.scores.get(key)
        row = {
            "step": len(self.steps), "label": label, "weights_memory": memory,
            "predicted_sqnr_db": round(float(metrics.sqnr_from_powers(
                1.0, sum(self.costs[i, k] for i, k in enumerate(choice)))), 3),
            "score": score,
            "fits_budget": None if self.budget is None else bool(memory <= self.budget),
            "meets_target": None if self.target is None or key not in self.scores
            else comparable(score) >= self.target,
            "chosen": False,
            "bits": {n: self.candidates[k] for n, k in zip(self.names, choice)},
        }
        self.steps.append(row)
        return row

    def uniform(self) -> list:
        return [[k] * len(self.names) for k in range(len(self.candidates))]

    def _choose(self, choice):
        for row in self.steps:
            row["chosen"] = row["bits"] == {n: self.candidates[k]
                                            for n, k in zip(self.names, choice)}
        return choice

    def by_budget(self, frontier):
        best = frontier.choice(len(frontier) - 1)
        evaluate = self.evaluate is not None
        uniform = [c for c in self.uniform() if self.memory_of(c) <= self.budget]
        if evaluate:
            self.prefetch(uniform)  # independent: all at once
        rows = [self.step(f"uniform {self.candidates[c[0]]}-bit", c, evaluate) for c in uniform]
        mixed = self.step("mixed (least predicted noise within the budget)", best, False)
        if rows and mixed["predicted_sqnr_db"] - rows[-1]["predicted_sqnr_db"] < MIN_GAIN_DB:
            mixed["label"] += f": less than {MIN_GAIN_DB:g} dB over uniform, not kept"
            return self._choose(uniform[-1])
        if evaluate:
            self.prefetch([best])
            mixed["score"] = self.scores[tuple(best)]
            top = max(uniform + [best], key=lambda c: (comparable(self.score_of(c)), c != best))
            if top != best:  # a tie goes to the uniform width: simpler to deploy
                logger.warning("Mixed-precision search: uniform %d-bit scores %.6g, at least the "
                               "mixed choice's %.6g; returning the uniform one.",
                               self.candidates[top[0]], self.score_of(top), self.score_of(best))
                best = top
        return self._choose(best)

    def by_target(self, frontier, drop: float):
        self.target = self.float_score - drop
        hi = len(frontier) - 1
        top = frontier.choice(hi)
        if self.step("frontier: most memory", top, True)["meets_target"] is False:
            logger.warning("Mixed-precision search: even the largest widths score %.6g, below "
                           "the target %.6g; returning them.", self.score_of(top), self.target)
            return self._choose(top)
        lo = 0
        while lo < hi:  # bisection on the frontier: the smallest memory meeting the target
            mid = (lo + hi) // 2
            if self.step(f"frontier point {mid + 1} of {len(frontier)}", frontier.choice(mid),
                         True)["meets_target"]:
                hi = mid
            else:
                lo = mid + 1
        best = frontier.choice(hi)
        for c in self.uniform():
            if self.budget is None or self.memory_of(c) <= self.budget:
                row = self.step(f"uniform {self.candidates[c[0]]}-bit", c,
                                self.memory_of(c) < self.memory_of(best))
                if row["meets_target"] and self.memory_of(c) < self.memory_of(best):
                    best = c
        return self._choose(best)
