"""One small step runner for the stages that are a list of named steps (export, fpga; FINN's pattern).

A step is a name, a function of the stage's state object and a line for the log. ``run_steps`` runs them in
order, logs each start and end, and returns the seconds each took (the stage puts them in its report).
``skip`` leaves steps out (``fpga --no-csim``, the budget gate's plan-only build); ``start`` resumes at a
named step when the state already holds what the steps before it made.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from contract import sha256_of


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[object], None]
    what: str = ""  # what the log says it does; default: the name


def run_steps(steps: Sequence[Step], state, log: Callable[[str], None], skip: Sequence[str] = (),
              start: str | None = None, digits: int = 2) -> dict[str, float]:
    """Run ``steps`` over ``state``; returns {step name: seconds, rounded to ``digits``} for those that ran."""
    names = [step.name for step in steps]
    unknown = [name for name in (*skip, *([start] if start else [])) if name not in names]
    if unknown:
        raise ValueError(f"no step named {', '.join(unknown)}; the steps are {', '.join(names)}")
    timings: dict[str, float] = {}
    started = start is None
    for step in steps:
        started = started or step.name == start
        if not started or step.name in skip:
            continue
        log(f"{step.what or step.name} ...")
        t0 = time.time()
        step.run(state)
        timings[step.name] = round(time.time() - t0, digits)
        log(f"{step.name} done in {timings[step.name]:.1f} s")
    return timings


def file_facts(path: Path, published: Path | None = None) -> dict:
    """Size and hash of ``path``; its ``path`` in the report is where it is published (``published``)."""
    return {"path": str(published or path), "bytes": path.stat().st_size, "sha256": sha256_of(path)}
