"""The Optuna side: storage, samplers, the worker loop, retries, and points.jsonl.

**Storage.** Default: SQLite, ``sqlite:///<out>/explore.db`` (one file, every study), opened as Optuna's
``RDBStorage`` with the settings Optuna's FAQ gives for SQLite under several processes (a long busy
timeout, so a writer waits for the lock instead of failing with "database is locked"), plus heartbeats
(a worker that dies without a word has its trial failed and re-queued by Optuna's
``RetryHeartbeatStaleTrialCallback``). SQLite has no row locks, so Optuna's pop of a queued trial is
not atomic there (optuna#4002: two processes can both take it): workers on one machine therefore ask for
their next trial under an ``fcntl`` file lock beside the database. Other storages, for several machines:
any SQLAlchemy URL of a database server (``postgresql://...``, ``mysql://...``: real row locks), or
``journal:PATH`` (Optuna's ``JournalStorage`` on a file, e.g. on NFS: its log order makes the pop atomic;
asks are locked with a file lock beside it too).

**Workers.** ``run`` is one worker: it loops ``study.optimize(n_trials=1)`` until the study has nothing
left to start, so any number of processes on any number of machines can run the same command on the same
storage. The grid (``GridSampler``) gives trial number i the grid point i; the search is NSGA-II.

**Trial states.** COMPLETE: evaluated (``user_attrs["record"]`` holds every figure). FAIL with status
"failed": the point cannot be evaluated (its reason is kept: the builder rejects it, a stage crashed).
FAIL with status "interrupted" (Ctrl-C) or a stale heartbeat (a killed worker): re-queued (WAITING, same
point) before the next ask, and that point's finished stages are reused. PRUNED: not trained on purpose
(over the byte budget in the search; or the same point as a trial still running elsewhere). A point
evaluated before is not retrained: the trial copies the earlier trial's figures.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from contract import UserError, atomic_path

from .space import DesignPoint, StudySpec
from .trial import INTERRUPT, Settings, TrialFailed, evaluate, precheck

# Objectives, in this order: proxy top-1 of the quantized model, on-chip bytes, estimated FPGA images/s.
OBJECTIVES = ("top1", "onchip_bytes", "fpga_images_per_second")
DIRECTIONS = ("maximize", "minimize", "maximize")
NSGA_POPULATION = 8
HEARTBEAT_S, GRACE_S = 60, 300
SQLITE_TIMEOUT_S = 300
SKIP_CAP = 20  # a search stops after this many skipped (over-budget) points per counted trial target


# --- storage ---------------------------------------------------------------------------------------

def default_storage(out: Path) -> str:
    return f"sqlite:///{out / 'explore.db'}"


@dataclass
class Storage:
    url: str
    optuna: object
    lock_path: Path | None  # the file lock asks are made under (local files), or None (database server)

    @contextmanager
    def lock(self):
        if self.lock_path is None:
            yield
            return
        with open(self.lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def open_storage(url: str) -> Storage:
    """An Optuna storage for ``url``: ``sqlite:///PATH``, ``journal:PATH`` or a database server URL."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead of Optuna's
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return Storage(url, JournalStorage(JournalFileBackend(str(path))), path.with_name(path.name + ".ask.lock"))
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs, lock_path = {}, None
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        lock_path = path.with_name(path.name + ".ask.lock")
    elif url.startswith("sqlite:"):
        raise UserError(f"--storage {url!r}: give SQLite as sqlite:///PATH (a file)")
    try:
        # Opening a new SQLite file creates Optuna's schema; two workers starting together would both create
        # it (measured: "UNIQUE constraint failed: alembic_version.version_num"), so they take turns.
        with Storage(url, None, lock_path).lock(), warnings.catch_warnings():
            # heartbeats and their retry callback are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                 grace_period=GRACE_S,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"--storage {url!r} needs a database driver that is not installed: {exc}") from None
    except Exception as exc:  # SQLAlchemy's errors for a bad URL or an unreachable server
        raise UserError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None
    return Storage(url, storage, lock_path)


def make_sampler(spec: StudySpec):
    if spec.kind == "grid":
        return optuna.samplers.GridSampler({"point": spec.grid_keys}, seed=0)
    # Unseeded: two workers with one seed would draw the same points.
    return optuna.samplers.NSGAIISampler(population_size=NSGA_POPULATION)


def load_or_create(spec: StudySpec, storage: Storage) -> optuna.Study:
    """The study, created on first use (with its seed points queued, once, by the creator)."""
    with storage.lock():
        try:
            study = optuna.create_study(study_name=spec.name, storage=storage.optuna, sampler=make_sampler(spec),
                                        directions=list(DIRECTIONS))
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=spec.name, storage=storage.optuna, sampler=make_sampler(spec))
            check_same_study(study, spec)
            return study
        study.set_user_attr("kind", spec.kind)
        study.set_user_attr("schedule", spec.schedule.name)
        study.set_user_attr("schedule_text", spec.schedule.describe())
        study.set_user_attr("description", spec.description)
        study.set_user_attr("objectives", list(OBJECTIVES))
        if spec.kind == "grid":
            study.set_user_attr("grid", spec.grid_keys)
        for point in spec.seeds:
            study.enqueue_trial({name: getattr(point, name) for name in spec.space}, user_attrs={"seeded": True})
    return study


def check_same_study(study: optuna.Study, spec: StudySpec) -> None:
    attrs = study.user_attrs
    other_grid = spec.kind == "grid" and attrs.get("grid") != spec.grid_keys
    if attrs.get("schedule_text") != spec.schedule.describe() or other_grid:
        raise UserError(f"study {spec.name!r} in this storage was made with another schedule or grid "
                        f"({attrs.get('schedule_text')}); use another --out or --storage")


# --- trial bookkeeping -----------------------------------------------------------------------------

def status_of(t: optuna.trial.FrozenTrial) -> str:
    """complete / failed / interrupted (to retry) / skipped / duplicate / running / waiting."""
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if t.state == TrialState.PRUNED:
        return t.user_attrs.get("status", "skipped")
    status = t.user_attrs.get("status")
    return "failed" if status == "failed" else "interrupted"  # Ctrl-C, or failed as stale by the heartbeat


def point_key(t: optuna.trial.FrozenTrial) -> str | None:
    if "key" in t.user_attrs:
        return t.user_attrs["key"]
    if "point" in t.params:
        return t.params["point"]
    if t.params:
        try:
            return DesignPoint.from_dict(t.params).key
        except (KeyError, ValueError):
            return None
    return None


def counted(trials) -> list:
    """Trials that count toward a study's size: evaluated, or failed for a reason of the point's own."""
    return [t for t in trials if status_of(t) in ("complete", "failed")]


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue again every interrupted point that no other trial has finished, runs or waits for (Optuna's
    own retry callback: same parameters and grid cell, ``retry_history`` recorded). Call under the lock."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    trials = study.get_trials(deepcopy=False)
    taken = {point_key(t) for t in trials if status_of(t) in ("complete", "failed", "running", "waiting")}
    requeued = []
    for t in trials:
        key = point_key(t)
        if status_of(t) == "interrupted" and key is not None and key not in taken and t.params:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback(max_retry=None)(study, t)
            taken.add(key)
            requeued.append(t.number)
    return requeued


def work_left(study: optuna.Study, spec: StudySpec, target: int | None) -> bool:
    """Whether this worker should start another trial (call under the lock, after requeue_interrupted)."""
    trials = study.get_trials(deepcopy=False)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if target is not None and len(counted(trials)) + running >= target:
        return False
    if spec.kind == "grid":  # (a target stops a grid early: trial i is the i-th point of GridSampler's seeded order)
        if any(t.state == TrialState.WAITING for t in trials):  # re-queued points
            return True
        taken = {point_key(t) for t in trials if status_of(t) in ("complete", "failed", "running")}
        return any(key not in taken for key in spec.grid_keys)
    # Queued seeds and retries are asked first, but count toward the target like any trial.
    skipped = sum(status_of(t) == "skipped" for t in trials)
    return skipped < SKIP_CAP * target


# --- the objective ---------------------------------------------------------------------------------

@dataclass
class Worker:
    spec: StudySpec
    storage: Storage
    settings: Settings
    out: Path
    target: int | None = None
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.time)
    _locked: bool = False

    def suggest(self, trial: optuna.Trial) -> DesignPoint:
        if self.spec.kind == "grid":
            key = trial.suggest_categorical("point", self.spec.grid_keys)
            return {p.key: p for p in self.spec.points}[key]
        values = {name: trial.suggest_categorical(name, list(choices)) for name, choices in self.spec.space.items()}
        return DesignPoint.from_dict(values)

    def objective(self, trial: optuna.Trial):
        self.release()  # the ask is done: the next worker may ask while this one trains
        point = self.suggest(trial)
        for name, value in (("key", point.key), ("label", point.label), ("status", "running"),
                            ("worker", f"{os.uname().nodename}:{os.getpid()}")):
            trial.set_user_attr(name, value)
        self.log(f"[explore {self.spec.name}] trial {trial.number}: {point.label}")
        try:
            earlier = self.same_point(trial, point)
            if earlier is not None:
                return self.copy_from(trial, earlier)
            settings = self.study_settings()
            pre = precheck(point, settings, fpga=self.spec.fpga_min_fps is not None)
            trial.set_user_attr("precheck", pre)
            reason = self.skip_reason(pre)
            if reason is not None:
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("reason", reason)
                raise optuna.TrialPruned(reason)
            trial_dir = self.out / self.spec.name / "trials" / f"{point.key}-{self.spec.schedule.tag}"
            trial.set_user_attr("trial_dir", str(trial_dir))
            record = evaluate(point, self.spec.schedule, settings, trial_dir,
                              on_step=lambda step: trial.set_user_attr("step", step))
        except KeyboardInterrupt:
            trial.set_user_attr("status", "interrupted")
            raise
        except optuna.TrialPruned:
            raise
        except TrialFailed as exc:
            self.fail(trial, str(exc))
        except Exception as exc:  # a bug or an unforeseen stage output: recorded, the study goes on
            self.fail(trial, f"{type(exc).__name__}: {exc}")
        trial.set_user_attr("record", record)
        trial.set_user_attr("status", "complete")
        return tuple(record[name] for name in OBJECTIVES)

    def study_settings(self) -> Settings:
        """The run's settings, with the band in the FPGA fit when the study asks for it."""
        return replace(self.settings, fit_with_band=self.settings.fit_with_band or self.spec.fit_with_band)

    def skip_reason(self, pre: dict) -> str | None:
        """Why a point is not trained, from its precheck (None: train it): over the byte budget (studies
        with ``skip_over_budget``), or short of the study's FPGA constraint."""
        if self.spec.skip_over_budget and not pre["within_budget"]:
            return f"over budget before training: {pre['onchip_bytes']:,} on-chip bytes > {self.settings.budget_bytes:,}"
        fpga, floor = pre.get("fpga"), self.spec.fpga_min_fps
        if fpga is None or floor is None:
            return None
        band = " with the calibration band" if self.study_settings().fit_with_band else ""
        if not fpga["fits"]:
            return f"does not fit {self.settings.part}{band} before training: {fpga['why_not']}"[:1000]
        if fpga["images_per_second"] < floor:
            return (f"under {floor:,.0f} images/s before training: {fpga['images_per_second']:,.0f} estimated on "
                    f"{self.settings.part}{band}")
        return None

    def fail(self, trial: optuna.Trial, reason: str):
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("reason", reason[:1000])
        raise TrialFailed(reason)

    def same_point(self, trial: optuna.Trial, point: DesignPoint):
        """An earlier trial of this point that finished (to copy), one running elsewhere (skip this one), or
        one that failed for a reason of the point's own (fail again without retraining: counted, so a sampler
        that keeps drawing it cannot loop)."""
        states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)
        for t in trial.study.get_trials(deepcopy=False, states=states):
            if t.number == trial.number or point_key(t) != point.key:
                continue
            if t.state == TrialState.COMPLETE:
                return t
            if t.state == TrialState.FAIL:
                if status_of(t) == "failed":
                    self.fail(trial, f"the same point as trial {t.number}, which failed: {t.user_attrs.get('reason')}")
                continue
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("reason", f"trial {t.number} is evaluating the same point")
            raise optuna.TrialPruned(f"trial {t.number} is evaluating the same point")
        return None

    def copy_from(self, trial: optuna.Trial, earlier) -> tuple:
        record = earlier.user_attrs["record"]
        trial.set_user_attr("record", record)
        trial.set_user_attr("copied_from", earlier.number)
        trial.set_user_attr("status", "complete")
        return tuple(record[name] for name in OBJECTIVES)

    def release(self) -> None:
        if self._locked:
            self._locked = False
            self._lock_cm.__exit__(None, None, None)

    # --- the loop --------------------------------------------------------------------------------

    def run(self, study: optuna.Study, after_trial: Callable[[optuna.Study], None]) -> int:
        """Evaluate trials until the study has nothing left to start. Returns how many this worker ran."""
        with INTERRUPT.installed():
            return self._run(study, after_trial)

    def _run(self, study: optuna.Study, after_trial: Callable[[optuna.Study], None]) -> int:
        ran = 0
        while True:
            INTERRUPT.check()
            self._lock_cm = self.storage.lock()
            self._lock_cm.__enter__()
            self._locked = True
            try:
                requeued = requeue_interrupted(study)
                if requeued:
                    self.log(f"[explore {self.spec.name}] re-queued interrupted trial(s) {requeued}")
                if not work_left(study, self.spec, self.target):
                    break
                study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
            finally:
                self.release()
            ran += 1
            after_trial(study)
            INTERRUPT.check()
        return ran


# --- points.jsonl ----------------------------------------------------------------------------------

def trial_row(study_name: str, t: optuna.trial.FrozenTrial) -> dict:
    record = t.user_attrs.get("record", {})
    point = {}
    if not record:
        try:
            point = DesignPoint.from_dict(t.params) if t.params and "point" not in t.params else None
            point = point.to_dict() if point else {}
        except (KeyError, ValueError):
            point = {}
    duration = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    return {"study": study_name, "trial": t.number, "state": t.state.name, "status": status_of(t),
            "reason": t.user_attrs.get("reason"), "key": point_key(t), "label": t.user_attrs.get("label"),
            **point, **record, "precheck": t.user_attrs.get("precheck"),
            "copied_from": t.user_attrs.get("copied_from"), "seeded": bool(t.user_attrs.get("seeded")),
            "retry_of": t.system_attrs.get("failed_trial"), "worker": t.user_attrs.get("worker"),
            "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "seconds": round(duration, 1) if duration is not None else None}


def study_rows(storage: Storage, name: str) -> list[dict]:
    study = optuna.load_study(study_name=name, storage=storage.optuna)
    return [trial_row(name, t) for t in study.get_trials(deepcopy=False)]


def write_points(storage: Storage, path: Path) -> list[dict]:
    """Every trial of every study in the storage, one JSON line each (rewritten whole, atomically)."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage.optuna, include_best_trial=False):
        rows.extend(study_rows(storage, summary.study_name))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row, sort_keys=False) + "\n" for row in rows))
    return rows
