"""How a grading report looks: the text table, a student's feedback file, safe one-line messages.

A report is a dict (the JSON the grader writes)::

    {"submission": ..., "mode": "bubblewrap", "seed": 0, "points": 14.5, "max_points": 16,
     "seconds": 12.1, "exercises": [{"name", "module", "function", "points", "max_points", "status",
     "rel_error", "message", "hint", "seconds", "public": {case}, "hidden": [{case}, ...]}, ...]}

with ``case = {"status", "rel_error", "message", "seconds"}``. :func:`render_table` prints it for
people (also what ``make check`` prints for the public cases alone); :func:`feedback_markdown` is
the file a student gets. Every text that can come from a submission goes through
:func:`one_line`: control characters and line breaks are escaped and long texts cut, so nothing a
submission prints can forge a row or a total.
"""

from __future__ import annotations

__all__ = ["MESSAGE_LIMIT", "feedback_markdown", "one_line", "render_table"]

MESSAGE_LIMIT = 200


def one_line(text, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line: every non-printable character (line breaks, tabs, escapes, carriage
    returns) written as ``\\n``, ``\\x1b``, ...; at most ``limit`` characters (then ``...``)."""
    text = "" if text is None else str(text)
    out = []
    for ch in text[: limit * 2]:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    joined = "".join(out)
    return joined if len(joined) <= limit and len(text) <= limit * 2 else joined[: limit - 3] + "..."


def _rel(value) -> str:
    return f"{value:.1e}" if isinstance(value, (int, float)) else "-"


def _points(value) -> str:
    return f"{value:g}"


def _hidden(score: dict) -> str:
    hidden = score.get("hidden") or []
    if not hidden:
        return "-"
    return f"{sum(c['status'] == 'pass' for c in hidden)}/{len(hidden)}"


def _public(score: dict) -> str:
    public = score.get("public")
    return public["status"] if public else "-"


def _row(score: dict) -> str:
    points = f"{_points(score['points'])}/{_points(score['max_points'])}"
    return (
        f"{one_line(score['name'], 26):26s} {points:>8s}  {one_line(score['status'], 15):15s} "
        f"{one_line(_public(score), 15):15s} {_hidden(score):>6s} {_rel(score.get('rel_error')):>9s} "
        f"{float(score.get('seconds') or 0):7.2f}  {one_line(score.get('message'))}"
    ).rstrip()


def render_table(report: dict) -> str:
    """The report as a text table: one row per exercise, then the total."""
    header = (
        f"{'exercise':26s} {'points':>8s}  {'status':15s} {'public case':15s} {'hidden':>6s} "
        f"{'rel.error':>9s} {'seconds':>7s}  message"
    )
    top = [f"submission: {one_line(report.get('submission'), 300)}"]
    if report.get("mode"):
        who = f" as {one_line(report['account'], 40)} (uid {report['uid']})" if report.get("account") else ""
        held = f"; {one_line(report['limits'], 120)}" if report.get("limits") else ""
        top.append(
            f"isolation: {report['mode']}{who}{held}"
            + (f"; hidden cases from seed {report['seed']}" if report.get("seed") is not None else "")
        )
    lines = [*top, header, "-" * len(header)]
    lines += [_row(s) for s in report["exercises"]]
    lines += [
        "-" * len(header),
        f"total: {_points(report['points'])}/{_points(report['max_points'])} points "
        f"({len(report['exercises'])} exercises, {float(report.get('seconds') or 0):.1f} s)",
    ]
    return "\n".join(lines)


def _written_points(written: dict) -> tuple[float, float, int]:
    """``(points, max points, questions graded)`` of the written questions."""
    graded = [w for w in written.values() if w.get("points") is not None]
    return (sum(w["points"] for w in graded), sum(w["max_points"] for w in written.values()), len(graded))


def _written_lines(written: dict) -> list[str]:
    lines = ["", "## Written questions", "", "| question | points | comment |", "| --- | --- | --- |"]
    for qid, w in written.items():
        points = "not graded yet" if w.get("points") is None else \
            f"{_points(w['points'])}/{_points(w['max_points'])}"
        cells = [qid, points, w.get("comment") or ""]
        lines.append("| " + " | ".join(one_line(c, 400).replace("|", "\\|") for c in cells) + " |")
    return lines


def feedback_markdown(report: dict, student: str, written: dict | None = None) -> str:
    """A student's feedback: the total, then each exercise with its status, error and hint, then
    (``written``: ``question id: {"points" (None until graded), "max_points", "comment"}``) the
    written questions' points and the TA's comments."""
    total = f"**Total: {_points(report['points'])} / {_points(report['max_points'])} points**"
    if written:
        points, top, graded = _written_points(written)
        total = (f"**Total: {_points(report['points'] + points)} / {_points(report['max_points'] + top)} "
                 f"points**: exercises {_points(report['points'])} / {_points(report['max_points'])}, "
                 f"written questions {_points(points)} / {_points(top)} ({graded} of {len(written)} graded)")
    lines = [
        f"# Feedback for {one_line(student, 80)}",
        "",
        total,
        "",
    ]
    if report.get("problem"):
        lines += [f"Your submission could not be graded: {one_line(report['problem'])}", ""]
    lines += [
        "| exercise | points | status | public case | hidden cases | rel. error | message |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in report["exercises"]:
        cells = [
            s["name"],
            f"{_points(s['points'])}/{_points(s['max_points'])}",
            s["status"],
            _public(s),
            _hidden(s),
            _rel(s.get("rel_error")),
            s.get("message") or "",
        ]
        lines.append("| " + " | ".join(one_line(c).replace("|", "\\|") for c in cells) + " |")
    hints = [
        (s["name"], s.get("hint")) for s in report["exercises"] if s["status"] != "pass" and s.get("hint")
    ]
    if hints:
        lines += ["", "## Hints", ""]
        lines += [f"- `{name}`: {one_line(hint, 400)}" for name, hint in hints]
    lines += [
        "",
        "The public case is the one your notebook's check cell runs; the hidden cases use other "
        "inputs of the same kind, drawn when grading. Points: each case is an equal share, and the "
        "public case counts once a hidden case passes.",
    ]
    if written:
        lines += _written_lines(written)
    lines.append("")
    return "\n".join(lines)
