"""The real Gradescope bundle on a fake ``/autograder`` tree, as Gradescope runs it: as root, with
bubblewrap unavailable (the fallback sandbox), a hostile submission, then two later runs of an
untouched release (fallback, then bubblewrap) in the same tree.

Gradescope's image holds only the bundle; this machine also holds the developer's tree, which the
attacks aim at too (the grader makes it root-only, as it does its own).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import hostile_submissions as hostile
import pytest
from conftest import require_root

from cs_utils.instructor import autograder
from cs_utils.instructor.gradescope import build_autograder_zip
from cs_utils.instructor.isolation import ACCOUNT_PREFIX
from cs_utils.instructor.release import strip_solutions
from cs_utils.instructor.sandbox import isolation_mode

ROOT = Path(__file__).resolve().parent.parent
PLAN = {"gram_matrix": "forge", "content_loss": "steal", "style_loss": "tamper", "tv_loss": "fifo",
        "instance_norm": "memfd", "mix_styles": "sysv", "nearest_neighbours": "wide"}
#: The assignment the bundle grades: the attacked exercises and one that runs the network.
GRADED = [*PLAN, "saliency_map"]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def _run(root: Path, submission: Path, *, fallback: bool) -> tuple[dict, subprocess.CompletedProcess]:
    shutil.rmtree(root / "submission", ignore_errors=True)
    shutil.copytree(submission, root / "submission")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    env.pop("CS_UTILS_SANDBOX", None)
    if fallback:
        env["CS_UTILS_SANDBOX"] = "fallback"     # as in a Docker container, where bwrap cannot start
    run = subprocess.run([str(root / "run_autograder")], capture_output=True, text=True, env=env,
                         cwd=root, timeout=900)
    path = root / "results" / "results.json"
    assert stat.S_ISREG(path.lstat().st_mode), "results.json is not a regular file"
    return json.loads(path.read_text()), run


@pytest.fixture(scope="module")
def bundle_runs():
    require_root("Gradescope runs the autograder as root")
    top = hostile.world_readable_folder("fake-autograder-")
    try:
        root = top / "autograder"
        archive = build_autograder_zip(top / "autograder.zip", names=GRADED)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(root / "source")
        shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
        os.chmod(root / "run_autograder", 0o755)
        marker = f"cs-utils-bundle-{os.getpid()}"
        targets = hostile.Targets(bundle=str(root), marker=marker)
        attacker = hostile.hostile(top / "attacker", PLAN, targets).parent
        release = top / "release" / "cs_utils"
        release.mkdir(parents=True)
        for path in (ROOT / "cs_utils").glob("*.py"):
            (release / path.name).write_text(strip_solutions(path.read_text(), path.name))
        (root / "results").mkdir(parents=True)
        os.mkfifo(root / "results" / "results.json")     # whatever is there is replaced
        hostile.open_to_all(top)                          # as Gradescope unpacks it: readable by all
        autograder.protect()                              # the developer's tree: root-only, as CI grades
        source = _digest(root / "source")
        first, first_run = _run(root, attacker, fallback=True)
        after_first = {
            "source": _digest(root / "source") == source,
            "processes": [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)],
            "shm": list(Path("/dev/shm").glob(f"{marker}*")),
            "modes": {p.name: oct(p.stat().st_mode & 0o777) for p in (root / "source", root / "results")},
        }
        second, _ = _run(root, release.parent, fallback=True)
        third, _ = _run(root, release.parent, fallback=False)
        yield {"first": first, "first_run": first_run, "after_first": after_first, "second": second,
               "third": third, "source_unchanged": _digest(root / "source") == source}
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def _by_exercise(results: dict) -> dict:
    out = {}
    for test in results["tests"]:
        name = test["name"].split(" ", 1)[0]
        out[name] = out.get(name, 0.0) + test["score"]
    return out


def test_the_hostile_submission_scores_only_what_it_solved(bundle_runs):
    first, run = bundle_runs["first"], bundle_runs["first_run"]
    assert run.returncode == 0, run.stderr[-2000:]
    scores = _by_exercise(first)
    assert list(scores) == GRADED
    assert {n: scores[n] for n in PLAN} == dict.fromkeys(PLAN, 0.0)
    assert {n: s for n, s in scores.items() if n not in PLAN} == {"saliency_map": 1.0}
    assert first["score"] == len(GRADED) - len(PLAN)
    outputs = {t["name"]: t["output"] for t in first["tests"]}
    for name in ("gram_matrix", "content_loss", "style_loss"):
        text = next(v for k, v in outputs.items()
                    if k.startswith(f"{name} ") and k.endswith("public case"))
        assert f"ATTACK {PLAN[name]}: 0/" in text, text


def test_the_fallback_ran_it_as_the_sandbox_account(bundle_runs):
    extra = bundle_runs["first"]["extra_data"]
    assert extra["mode"] == "fallback" and extra["account"].startswith(ACCOUNT_PREFIX) and extra["uid"] != 0
    assert isinstance(extra["seed"], int)
    assert str(extra["seed"]) not in bundle_runs["first"]["output"]  # the instructor's only
    assert f"seed {extra['seed']}, isolation fallback" in bundle_runs["first_run"].stdout


def test_the_grader_and_its_folders_are_whole_and_root_only(bundle_runs):
    after = bundle_runs["after_first"]
    assert after["source"] and bundle_runs["source_unchanged"]
    assert after["modes"] == {"source": "0o700", "results": "0o700"}
    assert after["processes"] == [] and after["shm"] == []


def test_later_runs_of_an_untouched_release_score_zero_in_both_modes(bundle_runs):
    second, third = bundle_runs["second"], bundle_runs["third"]
    assert second["score"] == 0 and second["extra_data"]["mode"] == "fallback"
    assert third["score"] == 0
    assert third["extra_data"]["mode"] == isolation_mode()[0] == "bubblewrap"
    assert all(t["score"] == 0 for t in second["tests"] + third["tests"])
    assert second["extra_data"]["seed"] != third["extra_data"]["seed"]    # a fresh seed per run
