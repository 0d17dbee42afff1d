"""Judging one exercise of a submission: each case's status from the sandbox's result, and the
exercise's points (each case an equal share; nothing without a passing hidden case).
"""

from __future__ import annotations

import numpy as np

from ..course import grading
from ..course.report import one_line
from .results import BadResult
from .sandbox import Sandbox

__all__ = ["ended_without_result", "exercise_score", "judge_case", "points_for"]


def points_for(max_points: float, public_passed: bool, hidden_passed: int, n_hidden: int) -> float:
    """Each case an equal share; without a passing hidden case, nothing (stored answers earn nothing)."""
    if n_hidden == 0:
        return float(max_points) if public_passed else 0.0
    if hidden_passed == 0:
        return 0.0
    return round(max_points * (hidden_passed + public_passed) / (n_hidden + 1), 2)


def ended_without_result(how: str, timeout: float, log: str) -> tuple[str, str]:
    if how == "timeout":
        return "timeout", (
            f"no result within the time limit of {timeout:g} s (an endless loop, or far too "
            "slow: vectorise the code)"
        )
    if how == "disk":
        return (
            "crashed",
            "the process wrote over 512 MB, 2000 files or 32 nested folders into its scratch folder "
            "(or over 64 MB into /tmp or /dev/shm) and was stopped",
        )
    if how == "memory":
        return "memory", f"killed by the memory limit{': ' + log if log else ''}"
    if how == "total time":
        return "timeout", "not run: the submission's total time limit was used up by earlier exercises"
    if how == "forkbomb":
        return "crashed", "the process started too many processes at once and was stopped"
    if how == "sandbox died":
        return "crashed", "the sandbox ended before the result (the submission stopped it)"
    what = f"killed by signal {how[6:]}" if how.startswith("signal") else f"exit code {how}"
    return "crashed", f"the process ended without a result ({what})" + (f": {log}" if log else "")


def judge_case(
    exercise, sandbox: Sandbox, cases, case: int, how: str, timeout: float, memory_mb: int
) -> dict:
    name = exercise.name
    try:
        got = sandbox.read_result(name, case)
    except BadResult as exc:
        if getattr(exc, "exists", False):
            return {
                "status": "invalid",
                "rel_error": None,
                "message": f"unusable result: {exc}",
                "seconds": 0.0,
            }
        status, message = ended_without_result(how, timeout, sandbox.log_tail(name))
        return {"status": status, "rel_error": None, "message": message, "seconds": 0.0}
    if got.status != "ok":
        message = got.message
        if got.status == "memory":
            message = f"memory limit of {memory_mb} MB exceeded: {message}"
        return {"status": got.status, "rel_error": None, "message": message, "seconds": got.seconds}
    try:
        result = grading.compare(
            exercise,
            got.outputs,
            cases.expected(name, case),
            cases.mistakes[name] if case == 0 else None,
            got.seconds,
        )
    except Exception as exc:  # noqa: BLE001 - a result the comparison cannot take is not a pass
        return {
            "status": "invalid",
            "rel_error": None,
            "seconds": got.seconds,
            "message": f"unusable result: {type(exc).__name__}: {exc}",
        }
    rel = result.rel_error if result.rel_error is not None and np.isfinite(result.rel_error) else None
    return {"status": result.status, "rel_error": rel, "message": result.message, "seconds": got.seconds}


def exercise_score(exercise, public: dict, hidden: list[dict], seconds: float) -> dict:
    cases = [public, *hidden]
    n_pass = sum(c["status"] == "pass" for c in hidden)
    points = points_for(exercise.points, public["status"] == "pass", n_pass, len(hidden))
    if all(c["status"] == "pass" for c in cases):
        status, message = "pass", ""
    else:
        labels = ["public case"] + [f"hidden case {i}" for i in range(1, len(hidden) + 1)]
        first = next((label, c) for label, c in zip(labels, cases) if c["status"] != "pass")
        status = "partial" if points > 0 else first[1]["status"]
        message = f"{first[0]}: {first[1]['message']}" if first[1]["message"] else first[0]
    errors = [c["rel_error"] for c in cases if c["rel_error"] is not None]
    clean = [{k: (one_line(v, 300) if k == "message" else v) for k, v in c.items()} for c in cases]
    return {
        "name": exercise.name,
        "module": exercise.path,
        "function": exercise.function,
        "points": points,
        "max_points": exercise.points,
        "status": status,
        "rel_error": max(errors) if errors else None,
        "message": one_line(message, 300),
        "hint": exercise.hint if status != "pass" else "",
        "seconds": round(seconds, 3),
        "public": clean[0],
        "hidden": clean[1:],
    }
