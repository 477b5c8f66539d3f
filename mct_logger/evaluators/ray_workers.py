"""`Ray(...)`: a sweep's evaluations spread over Ray actors, on one machine or a cluster.

Each worker is a Ray actor (`num_cpus_per_worker` CPUs, `num_gpus_per_worker`
GPUs; Ray sets `CUDA_VISIBLE_DEVICES` for it, and a CPU-only worker gets an
empty one so TensorFlow never reserves a GPU it was not given). It starts by
rebuilding the sweep's workspace once, from the shipment the driver put in the
object store once (`ray.put`: the models as `.keras` bytes, the encodings, the
plan), with the user's `eval_callback` (Ray's serialization, cloudpickle:
functions from `__main__` travel by value). It then evaluates job after job on
that workspace, never rebuilding it.

Workers start early and are kept for a whole call: `analyze`, `recommend`,
`search_mixed_precision` and `compress_model` open `evaluator.workers()` before
their own work (calibration, SQNR passes), so the actors start and import
TensorFlow meanwhile; each sweep of the call then loads its workspace onto
those actors (`load`) instead of starting new ones. The actors stop when the
call returns, so an idle evaluator never holds the cluster's CPUs or GPUs.

The driver keeps every worker busy with one job, takes results as they finish
(`ray.wait`), hands each to the sweep (which records it at once and updates the
live tables), and gives the worker its next job. Results are keyed by job, so
the tables are the same whatever the number of workers or the finishing order.

Faults:

- a worker that dies (its process killed, by Ray's memory monitor too; its
  node lost) fails its job with a `RayActorError` (or `OutOfMemoryError`...); the job is given to a new worker, at most `max_retries`
  times, then `EvaluationFailed` names the evaluation (finished scores stay
  recorded);
- an exception raised on a worker (by `eval_callback`, say) is raised again on
  the driver with its own type and notes, plus one naming the worker;
- Ctrl-C (or any error) on the driver kills the workers (`ray.kill`), and the
  scores finished so far are already recorded.

Example:

```python
analyzer = QuantAnalyzer(model, calibrate, evaluate, evaluator=Ray(num_workers=4))
analyzer.analyze(config, results_dir="qa", resume=True)
```
"""

from __future__ import annotations

import collections
import contextlib
import logging
import numbers
import os
import time

from mct_logger.evaluators.jobs import EvaluationFailed, call_job

logger = logging.getLogger("mct_logger")

# A runtime this evaluator starts runs its workers at the driver's priority. Ray
# starts workers at nice 15 by default (`worker_niceness`, so that its own
# daemons stay responsive); on a machine busy with other work the evaluations,
# which are the whole job here, then get a few percent of a core: on 2 cores
# beside two CPU-bound processes, a worker took 80 s to import TensorFlow.
# A cluster joined by address keeps its own settings.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}

INSTALL_HINT = 'Ray is not installed: pip install "mct-logger[ray]" (or pip install ray).'


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


class Ray:
    """Evaluates on Ray actors.

    Args:
        address: None starts a local Ray runtime on this machine (unless this
            process already joined one); "auto" joins the cluster this machine
            belongs to; "ray://host:10001" joins one through Ray Client; any
            other "host:port" is passed to `ray.init`.
        num_workers: actors to start (default: as many as the cluster's free
            CPUs, or GPUs when `num_gpus_per_worker` > 0, allow; never more
            than the sweep's evaluations).
        num_cpus_per_worker: CPUs per actor (also TensorFlow's thread pools' size).
        num_gpus_per_worker: GPUs per actor (0.5 puts two actors on one GPU).
        max_retries: how often one evaluation is given to a new worker after
            its worker died, before `EvaluationFailed`.
        runtime_env: Ray's runtime environment for the workers (e.g.
            `{"py_modules": [...]}` or `{"pip": ["mct-logger"]}` on a cluster
            whose nodes lack mct-logger); merged with the environment
            variables set here.

    Raises:
        ValueError: a bad argument (checked here, before Ray starts).
        ImportError: Ray is not installed (raised when a sweep starts).
    """

    def __init__(self, address=None, num_workers=None, num_cpus_per_worker=1,
                 num_gpus_per_worker=0, max_retries: int = 2, runtime_env: dict | None = None):
        if address is not None and not isinstance(address, str):
            raise ValueError(f"address must be None, 'auto', 'ray://host:port' or 'host:port'; "
                             f"got {address!r}.")
        if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(
                num_workers, numbers.Integral) or num_workers < 1):
            raise ValueError(f"num_workers must be a positive integer or None; got "
                             f"{num_workers!r}.")
        for name, value in (("num_cpus_per_worker", num_cpus_per_worker),
                            ("num_gpus_per_worker", num_gpus_per_worker)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"{name} must be a number >= 0; got {value!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, numbers.Integral) \
                or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0; got {max_retries!r}.")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise ValueError(f"runtime_env must be a dict of Ray's runtime-environment fields "
                             f"(e.g. {{'env_vars': {{...}}}}) or None; got {runtime_env!r}.")
        self.address = address
        self.num_workers = None if num_workers is None else int(num_workers)
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        self.max_retries = int(max_retries)
        self.runtime_env = dict(runtime_env or {})
        self.started_runtime = False
        self.startup_seconds: float | None = None  # ray.init, when this evaluator called it
        self.workers_started = 0  # actors this evaluator started, in all (replacements too)
        self._pool: _Pool | None = None  # the actors kept up by `workers()`
        self._actor_class = None
        # the last sweep: workers, seconds to its first result (workers starting,
        # importing TensorFlow, rebuilding the simulation, one evaluation), evaluations,
        # workers replaced after dying
        self.last_sweep: dict = {}

    def __repr__(self) -> str:
        return (f"Ray(address={self.address!r}, num_workers={self.num_workers}, "
                f"num_cpus_per_worker={self.num_cpus_per_worker}, "
                f"num_gpus_per_worker={self.num_gpus_per_worker})")

    def connect(self):
        """Ray, initialized (started or joined as `address` says); returns the module."""
        ray = _import_ray()
        if not ray.is_initialized():
            started = time.perf_counter()
            local = {"_system_config": LOCAL_SYSTEM_CONFIG} if self.address is None else {}
            ray.init(address="local" if self.address is None else self.address,
                     include_dashboard=False, logging_level=logging.WARNING, **local)
            self.started_runtime = self.address is None
            self.startup_seconds = time.perf_counter() - started
            logger.info("Ray: %s in %.1f s (%s)",
                        "started a local runtime" if self.started_runtime else "joined",
                        self.startup_seconds, ray.cluster_resources())
        return ray

    def shutdown(self) -> None:
        """Stops the Ray runtime this evaluator started (a joined one is left)."""
        if self.started_runtime:
            _import_ray().shutdown()
            self.started_runtime = False

    def workers_for(self, ray, jobs_hint: int | None) -> int:
        if self.num_workers is not None:
            count = self.num_workers
        else:
            resources = ray.available_resources()
            if self.num_gpus_per_worker:
                count = int(resources.get("GPU", 0) // self.num_gpus_per_worker)
            else:
                count = int(resources.get("CPU", 1) // max(self.num_cpus_per_worker, 1e-9))
            count = max(count, 1)
        return max(1, min(count, jobs_hint)) if jobs_hint else count

    def open(self, sweep, jobs_hint: int | None = None) -> "_RaySession":
        return _RaySession(self, sweep, jobs_hint)

    @contextlib.contextmanager
    def workers(self):
        """Starts the workers now and keeps them for every sweep opened inside.

        The actors start (and import TensorFlow) while the caller goes on with
        its own work; each sweep opened inside loads its workspace onto them
        rather than starting new ones. On leaving, the actors are killed, so
        their CPUs and GPUs go back to the cluster. Nested uses share the
        outer one's workers.

        Example:

        ```python
        evaluator = evaluators.Ray(num_workers=4)
        with evaluator.workers():   # one start-up for both calls
            compress_model(model, evaluate, 0.5, evaluator=evaluator)
            compress_model(model, evaluate, 0.7, evaluator=evaluator)
        ```

        Raises:
            ImportError: Ray is not installed.
        """
        if self._pool is not None:
            yield self
            return
        ray = self.connect()
        pool = self._pool = _Pool(self, ray)
        try:
            pool.warm(self.workers_for(ray, None))
            yield self
        finally:
            self._pool = None
            pool.close()

    def _new_actor(self, ray):
        """One actor, starting now: it imports TensorFlow; a sweep's `load` follows."""
        env = dict(self.runtime_env)
        env_vars = {"KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
                    "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                    **env.get("env_vars", {})}
        if not self.num_gpus_per_worker:
            env_vars.setdefault("CUDA_VISIBLE_DEVICES", "")  # see ray-project accelerators docs
        env["env_vars"] = env_vars
        self.workers_started += 1
        if self._actor_class is None:
            self._actor_class = ray.remote(_Worker)
        return self._actor_class.options(
            num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker,
            scheduling_strategy="SPREAD", runtime_env=env, max_restarts=0,
        ).remote(max(1, int(self.num_cpus_per_worker or 1)))


class _Pool:
    """The actors `Ray.workers()` keeps up: idle ones wait for the next sweep."""

    def __init__(self, evaluator: Ray, ray):
        self.evaluator, self.ray = evaluator, ray
        self.idle: list = []
        self.size = 0  # the workers it started with: a sweep's default count

    def warm(self, count: int) -> None:
        self.size = count
        self.idle.extend(self.evaluator._new_actor(self.ray) for _ in range(count))

    def take(self, count: int) -> list:
        """`count` actors: idle ones first, then new ones."""
        taken, self.idle = self.idle[:count], self.idle[count:]
        return taken + [self.evaluator._new_actor(self.ray) for _ in range(count - len(taken))]

    def give_back(self, actors: list) -> None:
        self.idle.extend(actors)

    def close(self) -> None:
        _kill(self.ray, self.idle)
        self.idle = []


class _RaySession:
    """The actors of one sweep; `evaluate` may be called several times (phases)."""

    def __init__(self, evaluator: Ray, sweep, jobs_hint):
        self.evaluator, self.sweep, self.jobs_hint = evaluator, sweep, jobs_hint
        self.ray = None
        self.actors: list = []
        self.refs: list = []  # the shipment and callback refs, alive for the whole sweep
        self.attempts: collections.Counter = collections.Counter()
        self.replaced = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(failed=exc[0] is not None)
        return False

    def close(self, failed: bool = True) -> None:
        """Kills the actors, or, after a sweep that finished inside
        `Ray.workers()`, gives them back for the next sweep."""
        if self.ray is None:
            return
        pool = self.evaluator._pool
        if pool is not None and not failed:
            pool.give_back(self.actors)
        else:
            _kill(self.ray, self.actors)
        self.actors = []
        self.refs = []

    # ------------------------------------------------------------- actors

    def _start(self) -> None:
        self.started = time.perf_counter()
        ray = self.ray = self.evaluator.connect()
        try:
            shipment = ray.put(self.sweep.shipment())
            callback = ray.put(self.sweep.eval_callback)
        except Exception as exc:
            raise _unserializable(ray, self.sweep.eval_callback, exc) from exc
        self.refs = [shipment, callback]
        pool = self.evaluator._pool
        if pool is not None and self.evaluator.num_workers is None:
            # the free resources no longer count the pool's own actors
            count = max(1, min(pool.size, self.jobs_hint or pool.size))
        else:
            count = self.evaluator.workers_for(ray, self.jobs_hint)
        started_before = self.evaluator.workers_started
        if pool is not None:
            self.actors = pool.take(count)
        else:
            self.actors = [self.evaluator._new_actor(ray) for _ in range(count)]
        for actor in self.actors:
            self._load(actor)
        self.evaluator.last_sweep = {
            "sweep": self.sweep.name, "workers": count,
            "workers_reused": count - (self.evaluator.workers_started - started_before),
            "first_result_seconds": None, "evaluations": 0, "workers_replaced": 0}
        logger.info("%s: %d Ray worker(s) rebuilding the simulation", self.sweep.name, count)

    def _load(self, actor) -> None:
        """Queues the sweep's workspace onto `actor`, before any of its jobs (an
        actor runs its calls in order)."""
        actor.load.remote(self.sweep.factory, self.refs[0], self.refs[1])

    def _new_actor(self):
        actor = self.evaluator._new_actor(self.ray)
        self._load(actor)
        return actor

    # ------------------------------------------------------------- jobs

    def evaluate(self, jobs):
        """Yields `(job, score)` as evaluations finish, in any order."""
        jobs = list(jobs)
        if not jobs:
            return
        if self.ray is None:
            self._start()
        ray = self.ray
        from ray.exceptions import (NodeDiedError, ObjectLostError, OutOfMemoryError,
                                    RayActorError, RayTaskError, WorkerCrashedError)

        died = (RayActorError, WorkerCrashedError, OutOfMemoryError, NodeDiedError,
                ObjectLostError)  # the worker, its node or its result is gone: retry

        pending = collections.deque(jobs)
        idle = list(self.actors)
        running: dict = {}  # ref -> (job, actor)
        while pending or running:
            while idle and pending:
                actor, job = idle.pop(), pending.popleft()
                running[actor.evaluate.remote(job)] = (job, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            job, actor = running.pop(done[0])
            try:
                value = ray.get(done[0])
            except RayTaskError as err:
                raise _raised_on_worker(err) from None
            except died as err:
                idle.append(self._replace(actor, job, err))
                pending.appendleft(job)
                continue
            idle.append(actor)
            stats = self.evaluator.last_sweep
            if stats["first_result_seconds"] is None:
                stats["first_result_seconds"] = round(time.perf_counter() - self.started, 3)
            stats["evaluations"] += 1
            yield job, value

    def _replace(self, actor, job, err):
        """A new actor for a dead one, or EvaluationFailed when `job` used its retries."""
        self.attempts[job.key] += 1
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if self.attempts[job.key] > self.evaluator.max_retries:
            raise EvaluationFailed(
                f"{self.sweep.name}: the Ray worker evaluating {job.what} died "
                f"{self.attempts[job.key]} times (last: {type(err).__name__}: {cause}); gave up "
                f"after max_retries={self.evaluator.max_retries}. The scores finished so far are "
                "kept in the sweep's record; run again to resume, or check the workers' "
                "memory and the eval_callback.")
        logger.warning("%s: the Ray worker evaluating %s died (%s: %s); retrying it on a new "
                       "worker (attempt %d of %d).", self.sweep.name, job.what,
                       type(err).__name__, cause, self.attempts[job.key] + 1,
                       self.evaluator.max_retries + 1)
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:
            pass
        fresh = self._new_actor()
        self.actors = [a for a in self.actors if a is not actor] + [fresh]
        self.replaced += 1
        self.evaluator.last_sweep["workers_replaced"] = self.replaced
        return fresh


class _Worker:
    """One Ray actor: TensorFlow imported at start, then per sweep a workspace
    rebuilt once (`load`) and its evaluations."""

    def __init__(self, threads: int):
        self.error = None
        self.workspace = None
        self.pid = os.getpid()
        try:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            for gpu in tf.config.list_physical_devices("GPU"):  # shared GPUs (0.5 each)
                tf.config.experimental.set_memory_growth(gpu, True)
        except Exception:  # already initialized, or no TensorFlow: keep its defaults
            pass
        try:  # what every workspace needs, imported while the driver calibrates
            import keras  # noqa: F401
        except Exception:  # raised again, where it matters, by `load`
            pass

    def load(self, factory, shipment, eval_callback) -> None:
        """The sweep's workspace, from the driver's shipment (the last one is dropped)."""
        self.workspace, self.error = None, None
        try:
            self.workspace = factory(shipment, eval_callback)
        except Exception as exc:  # raised again with the first job: a task error, not a death
            exc.add_note(f"raised while a Ray worker (pid {self.pid}) rebuilt the simulation")
            self.error = exc

    def evaluate(self, job):
        if self.error is not None:
            raise self.error
        return call_job(self.workspace, job)


def _kill(ray, actors) -> None:
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already dead
            pass


def _raised_on_worker(err) -> BaseException:
    """The worker's own exception (type and notes kept), noting where it ran."""
    cause = getattr(err, "cause", None)
    if not isinstance(cause, BaseException):
        return RuntimeError(str(err))
    where = f"on Ray worker pid {getattr(err, 'pid', '?')} at {getattr(err, 'ip', '?')}"
    cause.add_note(f"(raised {where}; its traceback: {err.traceback_str.strip()[-2000:]})"
                   if getattr(err, "traceback_str", None) else f"(raised {where})")
    return cause


def _unserializable(ray, callback, exc) -> Exception:
    """A TypeError naming what in `callback` Ray cannot serialize."""
    detail = ""
    try:
        from ray.util import inspect_serializability

        import io

        ok, failures = inspect_serializability(callback, name="eval_callback",
                                               print_file=io.StringIO())
        if not ok:
            detail = "; culprit(s): " + ", ".join(
                f"{getattr(f, 'name', f)} ({type(getattr(f, 'obj', None)).__name__})"
                for f in failures)
    except Exception:
        pass
    return TypeError(
        f"eval_callback cannot be sent to Ray workers ({type(exc).__name__}: {exc}){detail}. A "
        "tf.data.Dataset, an open file or a model cannot travel: load the data inside the "
        "callback (see the README, 'Evaluating on a Ray cluster').")
