"""The fleet report: the per-step JSON records of a rollout, rollback or status run, summed up per Pi.

A rollout's records (under OUT/run/): plan.json (the release and every Pi of the inventory, in order),
bundle.json, and per Pi HOST.deploy.json, HOST.health.json, HOST.rollback.json (the Pi failed its health
check and went back) and HOST.undo.json (FLEET_ROLLBACK_ON_FAILURE sent it back when the rollout stopped),
each written by ``python -m rpi.deploy ... --json-out``. A Pi with no record was never reached.

Outcomes: updated, unchanged (it already ran the release), failed: REASON (with "rolled back to R" when
the health check sent it back), rolled back (FLEET_ROLLBACK_ON_FAILURE), skipped (not reached).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..runtime.errors import RpiError

RUN_DIRS = {"rollout": "run", "rollback": "run-rollback", "status": "run-status"}
REPORTS = {"rollout": "report.json", "rollback": "rollback.json", "status": "status.json"}


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RpiError(f"cannot read the fleet record {path}: {exc}") from None


def plain_error(record: dict) -> str:
    """rpi.deploy's error without its "on user@host: " prefix (the table names the host already)."""
    error = record.get("error") or "failed without a message"
    if error.startswith("on ") and ": " in error:
        error = error.split(": ", 1)[1]
    return error


def health_summary(health: dict | None) -> str:
    if health is None:
        return "-"
    if not health.get("release") and health.get("error"):
        return "failed: " + plain_error(health)
    answers = health.get("known_answers") or {}
    service = health.get("service") or {}
    parts = [f"known answers {answers['passed']}/{answers['known_answers']}" if answers else "no known answers"]
    if service.get("enabled"):
        parts.append(f"service {service.get('state')}" + (f" on {service['release']}" if service.get("release") else ""))
    else:
        parts.append("service not installed" if service.get("systemd") else "no systemd")
    verdict = "ok" if health.get("ok") else "FAILED: " + "; ".join(health.get("failures") or [plain_error(health)])
    return f"{verdict} ({', '.join(parts)})"


def rollout_row(host: str, run: Path) -> dict:
    deploy, health, rollback, undo = (read_record(run / f"{host}.{step}.json")
                                      for step in ("deploy", "health", "rollback", "undo"))
    row = {"host": host, "before": None, "after": None, "outcome": "skipped", "reason": "not reached: the rollout "
           "stopped before this Pi", "health": health_summary(health), "check_ms": None, "deploy_seconds": None}
    if deploy is None:
        return row
    row.update(before=deploy.get("before"), after=deploy.get("after", deploy.get("before")),
               deploy_seconds=deploy.get("seconds"), reason="")
    if health:
        row["check_ms"] = health.get("check_ms")
        row["known_answers"] = health.get("known_answers")
        row["service"] = health.get("service")
    if not deploy.get("ok"):
        error = plain_error(deploy)
        row.update(outcome="failed", reason=("unreachable: " if error.startswith("cannot ssh to") else "") + error)
    elif health is None or not health.get("ok"):
        row.update(outcome="failed", reason="health check: " + "; ".join((health or {}).get("failures") or
                                                                         [plain_error(health or {})]))
        if rollback and rollback.get("rolled_back"):
            row["after"] = rollback["after"]
            row["reason"] += f"; rolled back to {rollback['after']}"
        elif rollback:
            row["reason"] += f"; the rollback failed too: {plain_error(rollback)}"
    elif undo and undo.get("rolled_back"):
        row.update(outcome="rolled back", after=undo["after"],
                   reason="the rollout stopped and FLEET_ROLLBACK_ON_FAILURE sent it back")
    elif undo and not undo.get("ok"):
        row.update(outcome="updated", reason=f"FLEET_ROLLBACK_ON_FAILURE could not send it back: {plain_error(undo)}")
    else:
        row["outcome"] = "updated" if deploy.get("changed") else "unchanged"
    return row


def rollback_row(host: str, run: Path, release: str) -> dict:
    rollback, health = (read_record(run / f"{host}.{step}.json") for step in ("rollback", "health"))
    row = {"host": host, "before": None, "after": None, "outcome": "skipped", "reason": "not reached",
           "health": health_summary(health), "check_ms": (health or {}).get("check_ms")}
    if rollback is None:
        return row
    row.update(before=rollback.get("before"), after=rollback.get("after"), reason="")
    if not rollback.get("ok"):
        error = plain_error(rollback)
        row.update(outcome="failed", reason=("unreachable: " if error.startswith("cannot ssh to") else "") + error)
    elif not rollback.get("rolled_back"):
        row.update(outcome="skipped", reason=f"on {rollback.get('before')}, not {release}")
    elif health is not None and not health.get("ok"):
        row.update(outcome="failed", reason="rolled back, but the health check failed: "
                   + "; ".join(health.get("failures") or [plain_error(health)]))
    else:
        row["outcome"] = "rolled back"
    return row


def status_row(host: str, run: Path) -> dict:
    status = read_record(run / f"{host}.status.json")
    if status is None or not status.get("ok"):
        error = plain_error(status) if status else "no answer recorded"
        return {"host": host, "current": None, "previous": None, "service": "-", "outcome": "failed",
                "reason": ("unreachable: " if error.startswith("cannot ssh to") else "") + error}
    service = status.get("service") or {}
    history = status.get("history") or []
    state = (service.get("state", "?") + (f" on {service['release']}" if service.get("release") else "")
             if service.get("enabled") else "not installed" if service.get("systemd") else "no systemd")
    return {"host": host, "current": status.get("current"), "previous": history[-2] if len(history) > 1 else None,
            "service": state, "python": status.get("python_version"), "outcome": "ok", "reason": ""}


def assemble(out: Path, kind: str) -> dict:
    run = out / RUN_DIRS[kind]
    plan = read_record(run / "plan.json")
    if plan is None:
        raise RpiError(f"no {kind} recorded in {run} (the playbook stopped before it planned one)")
    release = plan.get("release")
    if kind == "rollout":
        rows = [rollout_row(host, run) for host in plan["hosts"]]
    elif kind == "rollback":
        rows = [rollback_row(host, run, release) for host in plan["hosts"]]
    else:
        rows = [status_row(host, run) for host in plan["hosts"]]
    records = [p.stat().st_mtime for p in run.glob("*.json")]
    report = {"kind": kind, "release": release, "bundle": plan.get("bundle"), "started_utc": plan.get("started_utc"),
              "seconds": round(max(records) - plan["started"], 1) if records else None,
              "serial": plan.get("serial"), "max_fail_percentage": plan.get("max_fail_percentage"),
              "rollback_on_failure": plan.get("rollback_on_failure"), "hosts": rows,
              "counts": {outcome: sum(r["outcome"] == outcome for r in rows) for outcome in sorted({r["outcome"] for r in rows})}}
    if kind == "status":
        report["releases"] = sorted({r["current"] for r in rows if r["current"]})
        del report["bundle"], report["serial"], report["max_fail_percentage"], report["rollback_on_failure"]
    report["ok"] = all(r["outcome"] in ("updated", "unchanged", "rolled back", "ok") or
                       (kind == "rollback" and r["outcome"] == "skipped" and r["before"]) for r in rows)
    if kind == "rollout" and report["rollback_on_failure"]:
        report["ok"] = report["ok"] and not any(r["outcome"] == "rolled back" for r in rows)
    return report


def write_report(out: Path, kind: str) -> tuple[dict, Path]:
    report = assemble(out, kind)
    path = out / REPORTS[kind]
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(temporary, path)
    return report, path


def short(release: str | None) -> str:
    return release or "-"


def clip(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def table(report: dict) -> str:
    kind = report["kind"]
    if kind == "status":
        header = ("host", "current", "previous", "service", "python")
        lines = [(r["host"], short(r["current"]), short(r["previous"]), r["service"], r.get("python") or "-")
                 if r["outcome"] == "ok" else (r["host"], "-", "-", "-", "failed: " + r["reason"])
                 for r in report["hosts"]]
    else:
        header = ("host", "before", "after", "outcome", "health", "check ms")
        lines = [(r["host"], short(r["before"]), short(r["after"]),
                  r["outcome"] + (f": {r['reason']}" if r["reason"] and r["outcome"] != "updated" else ""),
                  r["health"], f"{r['check_ms']:.0f}" if r.get("check_ms") is not None else "-")
                 for r in report["hosts"]]
    lines = [tuple(clip(str(cell)) for cell in row) for row in lines]  # report.json keeps the whole reason
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    widths[-1] = 0  # the last column is not padded
    text = [" | ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *lines]]
    return "\n".join([text[0], "-" * max(len(t) for t in text), *text[1:]])


def summary_line(report: dict, path: Path) -> str:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in report["counts"].items())
    seconds = f" in {report['seconds']:.1f} s" if report.get("seconds") is not None else ""
    if report["kind"] == "status":
        releases = report["releases"]
        same = (f"one release everywhere: {releases[0]}" if len(releases) == 1 and report["ok"]
                else f"releases differ: {', '.join(releases) or 'none'}")
        return f"fleet status: {same} ({counts}); {path}"
    verb = "rollout of release" if report["kind"] == "rollout" else "rollback from release"
    verdict = "done" if report["ok"] else "STOPPED" if report["kind"] == "rollout" else "INCOMPLETE"
    return f"{verb} {report['release']}: {verdict}: {counts}{seconds}; report: {path}"
