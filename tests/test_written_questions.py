"""Written questions: the registry and the notebooks agree, answers are read from saved notebooks,
nothing of the model answers ships, submission.pdf puts each question on pages of its own, and a
class's written scores are merged into grades.csv and the feedback, or reported."""

import csv
import json
import re
import shutil
import unicodedata
import zipfile
from pathlib import Path

import pytest

from cs_utils.course.questions import (
    ANSWER_PROMPT,
    QUESTIONS,
    notebook_answers,
    question_markdown,
    read_answers,
    unanswered,
)
from cs_utils.instructor.release import build_release
from cs_utils.instructor.written import (
    RUBRICS,
    read_scores,
    submission_answers,
    update_scores_sheet,
    write_question_pages,
)

ROOT = Path(__file__).resolve().parent.parent


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def md(source, **tags):
    return {"cell_type": "markdown", "metadata": {"cs_utils": tags} if tags else {}, "source": source}


def code(source, outputs=()):
    return {
        "cell_type": "code",
        "metadata": {},
        "source": source,
        "outputs": list(outputs),
        "execution_count": None,
    }


def answer_in(notebook: dict, qid: str, answer: str) -> dict:
    """``notebook`` with ``answer`` typed into ``qid``'s answer cell, as a student would."""
    for cell in notebook["cells"]:
        if cell.get("metadata", {}).get("cs_utils", {}).get("answer") == qid:
            cell["source"] = answer
            return notebook
    raise AssertionError(f"no answer cell for {qid}")


# --------------------------------------------------------------------------- registry and notebooks


def test_every_notebook_asks_two_to_four_questions_each_with_a_rubric():
    per_notebook = {}
    for q in QUESTIONS.values():
        per_notebook.setdefault(q.notebook, []).append(q.id)
        assert re.fullmatch(r"q0[1-6]_[a-z_]+", q.id) and q.id.startswith(f"q{q.notebook[:2]}_"), q.id
        assert q.points > 0 and q.text.endswith(("?", ".")), q
    assert sorted(per_notebook) == sorted(p.stem for p in (ROOT / "notebooks").glob("0[1-6]_*.ipynb"))
    assert all(2 <= len(ids) <= 4 for ids in per_notebook.values()), per_notebook
    assert list(RUBRICS) == list(QUESTIONS)
    for qid, rubric in RUBRICS.items():
        assert len(rubric.answer) > 200 and 2 <= len(rubric.points) <= 3, qid


def test_each_question_cell_is_the_registry_text_followed_by_an_empty_answer_cell():
    for stem in sorted({q.notebook for q in QUESTIONS.values()}):
        cells = load(ROOT / "notebooks" / f"{stem}.ipynb")["cells"]
        asked = [k for k, c in enumerate(cells) if "question" in c.get("metadata", {}).get("cs_utils", {})]
        ids = [cells[k]["metadata"]["cs_utils"]["question"] for k in asked]
        assert ids == [q.id for q in QUESTIONS.values() if q.notebook == stem]
        for k, qid in zip(asked, ids):
            assert cells[k]["cell_type"] == "markdown" and text(cells[k]) == question_markdown(QUESTIONS[qid])
            answer = cells[k + 1]
            assert answer["cell_type"] == "markdown" and answer["metadata"] == {"cs_utils": {"answer": qid}}
            assert text(answer) == ANSWER_PROMPT
            assert k > 2 and "cs_utils" not in cells[k - 1]["metadata"], f"{qid} follows no figure"
    assert [q.id for q in unanswered(ROOT / "notebooks")] == list(QUESTIONS)


def test_answers_are_read_from_the_cells_whatever_a_student_did_to_them():
    qids = [q.id for q in QUESTIONS.values() if q.notebook == "02_saliency_and_occlusion"]
    a, b, c = qids
    notebook = {
        "cells": [
            code("x = 1"),
            md(question_markdown(QUESTIONS[a]), question=a),
            md(f"{ANSWER_PROMPT}\nCoarse windows.", answer=a),
            md(question_markdown(QUESTIONS[b]), question=b),
            md(ANSWER_PROMPT + "\n\n  ", answer=b),
            # c's answer cell lost its metadata (copied and pasted): the markdown cell after its question
            md(question_markdown(QUESTIONS[c]), question=c),
            md("Edges everywhere."),
            md("A second cell for a.", answer=a),  # a split answer is joined
            md("ignored", answer="q99_unknown"),
            "not a cell",
            {"cell_type": "markdown", "metadata": []},
        ]
    }
    assert notebook_answers(notebook) == {
        a: "Coarse windows.\n\nA second cell for a.",
        b: "",
        c: "Edges everywhere.",
    }
    assert notebook_answers({"cells": "nope"}) == {} and notebook_answers([]) == {}


def test_read_answers_survives_missing_broken_and_huge_notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder)
    qid = "q05_gram_forgets_where"
    path = folder / f"{QUESTIONS[qid].notebook}.ipynb"
    path.write_text(json.dumps(answer_in(load(path), qid, "The sum over positions.")))
    (folder / "01_filters_and_tsne.ipynb").write_text("{ not json")
    (folder / "06_fast_style_transfer.ipynb").unlink()
    answers = read_answers(folder)
    assert answers[qid] == "The sum over positions."
    assert [k for k, v in answers.items() if v] == [qid]
    import cs_utils.course.questions as questions

    monkeypatch.setattr(questions, "MAX_NOTEBOOK_BYTES", 1000)
    assert read_answers(folder)[qid] == ""


def test_the_release_keeps_questions_and_empty_answers_and_ships_no_model_answer(tmp_path):
    out = tmp_path / "student"
    build_release(out, ROOT)
    assert [q.id for q in unanswered(out / "notebooks")] == list(QUESTIONS)
    for stem in {q.notebook for q in QUESTIONS.values()}:
        ours, theirs = (load(p / "notebooks" / f"{stem}.ipynb")["cells"] for p in (ROOT, out))
        marked = [(c["metadata"], text(c)) for c in ours if "cs_utils" in c.get("metadata", {})]
        assert marked == [(c["metadata"], text(c)) for c in theirs if "cs_utils" in c.get("metadata", {})]
    secrets = [RUBRICS[q].answer for q in RUBRICS] + [p for r in RUBRICS.values() for p in r.points]
    fragments = {s[i : i + 60] for s in secrets for i in range(0, max(1, len(s) - 60), 30)}
    shipped = [p for p in out.rglob("*") if p.is_file()]
    assert not (out / "cs_utils" / "instructor").exists()
    for path in shipped:
        body = " ".join(path.read_bytes().decode("utf-8", errors="replace").split())
        leaked = [f for f in fragments if f in body]
        assert not leaked, f"{path.relative_to(out)} holds model-answer text: {leaked[:2]}"
    readme = (out / "README.md").read_text()
    for q in QUESTIONS.values():
        assert re.search(
            rf"^\| `{q.id}` \| `notebooks/{q.notebook}.ipynb` \| .* \| {q.points} \|$", readme, re.M
        ), q.id


# --------------------------------------------------------------------------- submission.pdf


def test_submission_pdf_puts_each_question_on_its_own_pages_and_maps_them(tmp_path):
    from pypdf import PdfReader

    from cs_utils.course.submission_pdf import notebook_sections, write_submission_pdf

    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    shown = ("01_filters_and_tsne", "02_saliency_and_occlusion")  # the others are missing: not printed
    for stem in shown:
        shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", root / "notebooks")
    qid, long = "q02_guided_randomization", "q02_gradcam_layer"
    path = root / "notebooks" / f"{QUESTIONS[qid].notebook}.ipynb"
    notebook = answer_in(load(path), qid, "It reconstructs edges, marker-7714 in the PDF.")
    notebook = answer_in(notebook, long, "\n\n".join(f"Paragraph {k} of a long answer." for k in range(120)))
    # printed output in the cell before the question: it stays on the page before
    asked = [c.get("metadata", {}).get("cs_utils", {}).get("question") for c in notebook["cells"]]
    notebook["cells"][asked.index(qid) - 1]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": "output-5521\n"}
    ]
    path.write_text(json.dumps(notebook))
    sections = notebook_sections(load(path))
    assert [q for q, _ in sections if q] == [q.id for q in QUESTIONS.values() if q.notebook == path.stem]
    assert sum(len(cells) for _, cells in sections) == len(notebook["cells"])

    result = write_submission_pdf(root)
    reader = PdfReader(root / "submission.pdf")
    pages = [" ".join(unicodedata.normalize("NFKC", p.extract_text()).split()) for p in reader.pages]
    assert result["pages"] == len(pages) == load(root / "submission_pages.json")["pages"]
    asked_here = [q.id for q in QUESTIONS.values() if q.notebook in shown]
    assert list(result["questions"]) == asked_here
    assert result["missing"] == [q for q in QUESTIONS if q not in asked_here]
    for q, info in result["questions"].items():
        first = pages[info["pages"][0] - 1]
        assert first.startswith(f"Question {q} ({QUESTIONS[q].points} points)"), (q, first[:80])
        assert f"Question {q}" not in pages[info["pages"][0] - 2]
        assert info["notebook"] == QUESTIONS[q].notebook
        after = info["pages"][-1]  # the notebook goes on on a new page
        assert "Question" not in pages[after][:9] and "Paragraph" not in pages[after]
    hits = [n + 1 for n, page in enumerate(pages) if "marker-7714" in page]
    assert hits == result["questions"][qid]["pages"]
    assert "output-5521" in pages[result["questions"][qid]["pages"][0] - 2]
    spread = result["questions"][long]["pages"]
    assert len(spread) >= 2 and spread == list(range(spread[0], spread[-1] + 1))
    assert [n + 1 for n, page in enumerate(pages) if "of a long answer" in page] == spread
    assert "Paragraph 119 of a long answer." in pages[spread[-1] - 1]
    spans = result["notebooks"]
    assert spans == {"01_filters_and_tsne": [1, spans["01_filters_and_tsne"][1]],
                     "02_saliency_and_occlusion": [spans["01_filters_and_tsne"][1] + 1, len(pages)]}


# --------------------------------------------------------------------------- grading a class's answers


def submissions(tmp_path) -> Path:
    """Three students: a zip with two answers (one is HTML), a folder with one, a folder whose
    notebooks are links to the reference's files and a FIFO."""
    classroom = tmp_path / "class"
    (classroom / "s2" / "notebooks").mkdir(parents=True)
    (classroom / "s3" / "notebooks").mkdir(parents=True)
    nb01 = ROOT / "notebooks" / "01_filters_and_tsne.ipynb"
    nb05 = ROOT / "notebooks" / "05_texture_and_style_transfer.ipynb"
    with zipfile.ZipFile(classroom / "s1.zip", "w") as zf:
        zf.writestr(
            "project/notebooks/01_filters_and_tsne.ipynb",
            json.dumps(answer_in(load(nb01), "q01_tsne", "<script>alert(1)</script> & local neighborhoods")),
        )
        zf.writestr(
            "notebooks/05_texture_and_style_transfer.ipynb",
            json.dumps(answer_in(load(nb05), "q05_gram_forgets_where", "Sums over positions.")),
        )
        zf.writestr(
            "deeper/still/notebooks/05_texture_and_style_transfer.ipynb",
            json.dumps(answer_in(load(nb05), "q05_gram_forgets_where", "not this one")),
        )
    (classroom / "s2" / "notebooks" / "01_filters_and_tsne.ipynb").write_text(
        json.dumps(answer_in(load(nb01), "q01_filters", "Pixel space."))
    )
    (classroom / "s3" / "notebooks" / "01_filters_and_tsne.ipynb").symlink_to(
        ROOT / "cs_utils" / "instructor" / "written.py"
    )
    import os

    os.mkfifo(classroom / "s3" / "notebooks" / "05_texture_and_style_transfer.ipynb")
    return classroom


def test_answers_come_from_zips_and_folders_never_through_links_or_fifos(tmp_path):
    classroom = submissions(tmp_path)
    got = {
        s: {q: a for q, a in submission_answers(classroom / s).items() if a} for s in ("s1.zip", "s2", "s3")
    }
    assert got == {
        "s1.zip": {
            "q01_tsne": "<script>alert(1)</script> & local neighborhoods",
            "q05_gram_forgets_where": "Sums over positions.",
        },
        "s2": {"q01_filters": "Pixel space."},
        "s3": {},
    }
    assert submission_answers(tmp_path / "missing.zip") == {q: "" for q in QUESTIONS}
    import os

    os.mkfifo(tmp_path / "fifo.zip")  # never blocks
    (tmp_path / "link.zip").symlink_to(classroom / "s1.zip")  # never followed
    for name in ("fifo.zip", "link.zip"):
        assert submission_answers(tmp_path / name) == {q: "" for q in QUESTIONS}


def test_the_tas_pages_escape_answers_under_the_rubric(tmp_path):
    pages = write_question_pages(
        tmp_path / "written",
        {"s1": {"q01_tsne": "<script>alert(1)</script> & local neighborhoods"}, "<b>s2</b>": {}},
    )
    assert [p.stem for p in pages] == list(QUESTIONS)
    page = (tmp_path / "written" / "q01_tsne.html").read_text()
    assert (
        "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; local neighborhoods" in page
    )
    assert "&lt;b&gt;s2&lt;/b&gt;" in page and "<b>s2</b>" not in page
    assert page.index("Rubric") < page.index("Model answer") < page.index("&lt;script&gt;")
    assert all(point.split()[0] in page for point in RUBRICS["q01_tsne"].points)
    assert "Answers (1 of 2)" in page and "(no answer)" in page
    assert "Content-Security-Policy" in page
    assert "q01_tsne.html" in (tmp_path / "written" / "index.html").read_text()


def test_scores_sheet_keeps_filled_rows_and_reports_every_bad_one(tmp_path):
    sheet = tmp_path / "written_scores.csv"
    assert update_scores_sheet(sheet, ["s1", "s2"]) == 2 * len(QUESTIONS)
    with open(sheet, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["question"], r["points"]) for r in rows[:2]] == [
        ("s1", "q01_filters", ""),
        ("s1", "q01_flipped_neighbors", ""),
    ]
    for row in rows:
        if row["student"] == "s1" and row["question"] == "q01_tsne":
            row.update(points="1.5", comment="misses what the gaps mean")
        if row["student"] == "s2" and row["question"] == "q01_filters":
            row.update(points="3")  # out of range: 2 points
        if row["student"] == "s2" and row["question"] == "q01_tsne":
            row.update(points="two")  # not a number
        if row["student"] == "s2" and row["question"] == "q02_gradcam_layer":
            row.update(comment="see me")  # a comment, no points
    rows += [
        {"student": "s9", "question": "q01_tsne", "points": "1", "comment": ""},
        {"student": "s1", "question": "q07_nope", "points": "1", "comment": ""},
        {"student": "s1", "question": "q01_tsne", "points": "2", "comment": "again"},
        {"student": "s2", "question": "q01_flipped_neighbors", "points": "nan", "comment": ""},
        {"student": "s2", "question": "q06_checkerboard", "points": "0", "comment": "blank answer"},
    ]
    with open(sheet, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", "question", "points", "comment"])
        writer.writeheader()
        writer.writerows(rows)
    assert update_scores_sheet(sheet, ["s1", "s2", "s3"]) == len(QUESTIONS)  # s3 added, nothing lost
    scores, problems = read_scores(sheet, ["s1", "s2", "s3"])
    assert scores == {
        "s1": {"q01_tsne": {"points": 1.5, "comment": "misses what the gaps mean"}},
        "s2": {"q06_checkerboard": {"points": 0.0, "comment": "blank answer"}},
    }
    reasons = sorted((p.student, p.question, p.reason[:40]) for p in problems)
    assert reasons == sorted(
        (s, q, r[:40])
        for s, q, r in [
            ("s2", "q01_filters", "points 3 outside 0 .. 2"),
            ("s2", "q01_tsne", "points 'two' is not a number"),
            ("s2", "q02_gradcam_layer", "a comment without points: give the point"),
            ("s9", "q01_tsne", "unknown student id (no submission of that"),
            ("s1", "q07_nope", "unknown question id; the questions are q0"),
            ("s1", "q01_tsne", "a second row for the same student and que"),
            ("s2", "q01_flipped_neighbors", "points nan outside 0 .. 2"),
        ]
    ), reasons
    assert all(f"line {p.line}" in str(p) for p in problems)


@pytest.mark.usefixtures("as_root")
def test_a_class_graded_twice_merges_the_tas_points_into_grades_and_feedback(tmp_path):
    from cs_utils.instructor.class_grading import grade_class

    classroom = submissions(tmp_path)
    (classroom / "s3" / "notebooks" / "05_texture_and_style_transfer.ipynb").unlink()  # the FIFO
    out = tmp_path / "grades"
    names = ["tv_loss"]
    grade_class(classroom, out, names=names, hidden=1, jobs=2, progress=False, seed=5)
    assert sorted(p.name for p in (out / "written").iterdir()) == sorted(
        [f"{q}.html" for q in QUESTIONS] + ["index.html"]
    )
    assert "Sums over positions." in (out / "written" / "q05_gram_forgets_where.html").read_text()
    with open(out / "grades.csv", newline="") as f:
        first = {r["student_id"]: r for r in csv.DictReader(f)}
    assert all(first[s]["q01_tsne"] == "" and float(first[s]["written_points"]) == 0 for s in first)
    top = sum(q.points for q in QUESTIONS.values())
    assert float(first["s1"]["max_score"]) == 1 + top

    with open(out / "written_scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(QUESTIONS)
    filled = {
        ("s1", "q01_tsne"): ("1.5", "=cmd|' /C calc'!A0"),
        ("s1", "q05_gram_forgets_where"): ("2", "right"),
        ("s2", "q01_filters"): ("2", ""),
        ("s3", "q01_filters"): ("5", "too many"),
    }
    for row in rows:
        row["points"], row["comment"] = filled.get((row["student"], row["question"]), ("", ""))
    rows.append({"student": "s2", "question": "q01_typo", "points": "1", "comment": ""})
    with open(out / "written_scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", "question", "points", "comment"])
        writer.writeheader()
        writer.writerows(rows)

    reports = grade_class(classroom, out, names=names, hidden=1, jobs=2, progress=False)  # resumes
    assert [r["seed"] for r in reports] == [5, 5, 5]
    with open(out / "grades.csv", newline="") as f:
        second = {r["student_id"]: r for r in csv.DictReader(f)}
    code_points = {s: float(first[s]["raw_score"]) for s in first}
    assert float(second["s1"]["written_points"]) == 3.5 and second["s1"]["q01_tsne"] == "1.5"
    assert float(second["s1"]["score"]) == code_points["s1"] + 3.5
    assert float(second["s2"]["written_points"]) == 2 and float(second["s3"]["written_points"]) == 0
    assert second["s3"]["q01_filters"] == ""
    problems = (out / "written_problems.txt").read_text()
    assert "('s3', 'q01_filters'): points 5 outside 0 .. 2" in problems
    assert "('s2', 'q01_typo'): unknown question id" in problems
    feedback = (out / "feedback" / "s1.md").read_text()
    assert "written questions 3.5 / 30 (2 of 15 graded)" in feedback
    assert "| q01_tsne | 1.5/2 | =cmd\\|' /C calc'!A0 |" in feedback
    assert "| q01_filters | not graded yet |  |" in feedback


def test_the_instructors_readme_lists_every_question():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^  \| `(q0\w+)` \| `(\w+)` \| (.+) \| (\d+) \|$", readme, flags=re.M)
    assert rows == [(q.id, q.notebook, q.title, str(q.points)) for q in QUESTIONS.values()]
    total = sum(q.points for q in QUESTIONS.values())
    assert f"**Written questions** ({len(QUESTIONS)}, {total} points;" in readme


def test_a_scores_sheet_that_cannot_be_read_is_reported_and_left_alone(tmp_path):
    from cs_utils.instructor.class_grading import grade_written

    out = tmp_path / "grades"
    out.mkdir()
    sheet = out / "written_scores.csv"
    sheet.write_bytes(b"name;score\ns1;2\n")
    assert grade_written([("s1", tmp_path / "s1.zip")], out, progress=False) == {}
    assert sheet.read_bytes() == b"name;score\ns1;2\n"
    problems = (out / "written_problems.txt").read_text()
    assert "nothing of it is merged" in problems and "missing student, question, points" in problems
    sheet.write_bytes("student,question,points,comment\ns1,q01_tsne,2,tr\xe8s bien\n".encode("latin-1"))
    assert grade_written([("s1", tmp_path / "s1.zip")], out, progress=False) == {}
    assert "codec can't decode" in (out / "written_problems.txt").read_text()
    sheet.write_text("student,question,points,comment\ns1,q01_tsne,2,fine\n")
    scores = grade_written([("s1", tmp_path / "s1.zip")], out, progress=False)
    assert scores == {"s1": {"q01_tsne": {"points": 2.0, "comment": "fine"}}}
    assert not (out / "written_problems.txt").exists()
