"""Grading the written questions: model answers and rubrics, the TAs' pages and their scores.

The model answer and rubric of every question of :data:`cs_utils.course.questions.QUESTIONS` live
here, in the instructor's package, which never ships. For a class, :func:`write_question_pages`
writes one HTML page per question (``OUT/written/<id>.html``): the question, the rubric, the model
answer, then every student's answer (escaped: an answer is shown as text, never run as HTML).
:func:`update_scores_sheet` writes ``OUT/written_scores.csv`` (``student, question, points,
comment``) for TAs to fill, keeping every row they filled. :func:`read_scores` reads it back: a
row with an unknown student or question id, points that are not a number or outside ``0 ..
points``, or a second row for the same student and question is reported (:class:`ScoreProblem`),
never silently dropped or merged.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..course.questions import MAX_NOTEBOOK_BYTES, QUESTIONS, notebook_answers
from .isolation import read_regular

__all__ = ["RUBRICS", "SCORE_COLUMNS", "Rubric", "ScoreProblem", "read_scores", "student_written",
           "submission_answers", "update_scores_sheet", "write_atomic", "write_question_pages"]

SCORE_COLUMNS = ["student", "question", "points", "comment"]


@dataclass(frozen=True)
class Rubric:
    """The model answer and the points a full answer makes (one point of the question each, or
    shared evenly)."""

    answer: str
    points: tuple[str, ...]


RUBRICS: dict[str, Rubric] = {
    "q01_filters": Rubric(
        "The first layer's weights multiply the pixels directly: each filter is a small RGB patch "
        "in image space, and the filter responds most to a patch that looks like it, so drawing the "
        "weights shows what it detects. A second-layer filter weights the first layer's channels, not "
        "colors: its 3x3 slices are in an abstract feature space, and what it detects depends on the "
        "filters below it, so its weights drawn as gray patches are not the pattern it responds to.",
        ("first-layer weights live in pixel space: the filter is the patch it responds to most",
         "deeper filters combine feature channels (not RGB), so their weights are not a picture of "
         "what they detect")),
    "q01_flipped_neighbors": Rubric(
        "Pixel distance compares the value at each position with the value at the same position: "
        "mirroring or shifting moves every edge to another place, so almost every pixel differs. The "
        "feature vector is pooled over all positions (global average pooling) after layers trained "
        "with flips and crops, so it records which patterns occur, not where: the copy has nearly "
        "the same features.",
        ("pixel distance is position by position, so moving the content changes every pixel",
         "the features are averaged over positions and learned to be invariant to flips/shifts")),
    "q01_tsne": Rubric(
        "PCA is a linear projection that keeps the directions of largest global variance; classes "
        "that differ along many small directions overlap. t-SNE is nonlinear and keeps "
        "neighborhoods: points near each other in 1280-d stay near each other. It does not keep "
        "global geometry: the distances between clusters and the clusters' sizes and shapes carry "
        "little meaning (and depend on the perplexity).",
        ("t-SNE preserves local neighborhoods (nonlinear); PCA keeps global linear variance",
         "gaps between clusters and cluster sizes in t-SNE are not meaningful distances")),
    "q02_occlusion_vs_saliency": Rubric(
        "The saliency map is the gradient: an infinitesimal, pixel-by-pixel sensitivity of a "
        "piecewise-linear network, which jumps from pixel to pixel as ReLUs switch (shattered "
        "gradients), hence speckle. Occlusion makes a real, finite change of a whole window and "
        "measures the drop in score; neighboring positions share most of their window, so the map "
        "is smooth, and its resolution is limited by the window and the stride.",
        ("saliency: local linear sensitivity per pixel, noisy because the gradient varies from pixel "
         "to pixel", "occlusion: a real change of a window; overlapping windows and the stride make "
         "it coarse and smooth")),
    "q02_guided_randomization": Rubric(
        "Guided backprop zeroes negative gradients at every ReLU on the way back, so what passes is "
        "mostly a reconstruction of the image's edges from the lower layers: it behaves like an edge "
        "detector on the input. The top layers (and the class) barely matter, so it fails the model "
        "randomization sanity check (Adebayo et al.): a map that does not change when the decision "
        "does cannot explain the decision.",
        ("the guided rule reconstructs image structure (edges) from lower layers, nearly "
         "independent of upper weights and class",
         "an explanation must depend on the model; one that survives randomization is not faithful")),
    "q02_gradcam_layer": Rubric(
        "Early layers detect edges and colors, not the class, and have a small receptive field. "
        "Grad-CAM's weights are the gradient averaged over positions; at an early layer the gradient "
        "changes sign across positions, so the averages are small and noisy, and the map follows "
        "edges and texture all over the image instead of the object: it scatters. The last layer "
        "has class-specific features and a large receptive field, with coarse positions left.",
        ("early features are low-level (edges, colors) and not class-specific",
         "averaging gradients over positions gives weak, noisy channel weights there: a scattered map")),
    "q03_why_regularize": Rubric(
        "The score is defined on every image, and most images are not natural; the steepest ascent "
        "direction follows the network's sensitivity to many small high-frequency patterns (the same "
        "near-linearity adversarial examples use), so the optimum is noise the network scores highly. "
        "The regularizers are a prior for natural images: L2 keeps pixel values moderate, blur "
        "removes high frequencies, jitter asks for an image that scores highly at every shift, which "
        "patterns tied to exact pixels cannot.",
        ("unconstrained ascent exploits high-frequency, unnatural patterns the network responds to",
         "L2/blur/jitter act as a natural-image prior: bounded values, low frequencies, robustness "
         "to shifts")),
    "q03_adversarial_linear": Rubric(
        "Near an image the network is close to linear in its input (ReLU networks are piecewise "
        "linear). A change of epsilon per pixel along the sign of the gradient moves the score by "
        "about epsilon times the sum of the gradient's absolute values, which grows with the number "
        "of pixels (150,528 at 224x224): many tiny, aligned changes add up (Goodfellow et al.).",
        ("the network is locally nearly linear in its input",
         "in high dimension, a tiny aligned change per pixel adds up to a large change of the score")),
    "q04_dream_depth": Rubric(
        "DeepDream raises the activations of the chosen layer, so it amplifies whatever that layer "
        "detects. Shallow units have small receptive fields and detect edges, colors and small "
        "textures; deep units have large receptive fields and detect object parts learned from "
        "ImageNet (many dogs and other animals: eyes, fur), so their dream paints those.",
        ("the objective amplifies what the chosen layer's units detect",
         "receptive field and abstraction grow with depth: edges/textures early, object parts late")),
    "q04_inversion_depth": Rubric(
        "Each layer keeps what classification needs and discards the rest: strides and pooling "
        "discard exact positions, and training makes the features invariant to color, lighting and "
        "small deformations. Many images share the same deep features, so the inversion is "
        "underdetermined: without a regularizer (total variation, a bounded range) the optimizer "
        "reaches one of the many unnatural images with those features.",
        ("deeper features are invariant: positions and colors are discarded by stride/pooling and "
         "training", "many images give the same features: the inverse is not unique, the "
         "regularizer chooses a natural-looking one")),
    "q05_gram_forgets_where": Rubric(
        "G = F F^T / (CHW) sums the products of two channels over all positions, so permuting the "
        "positions leaves it unchanged: it records which features occur together and how strongly, "
        "not where. A texture is stationary, the same statistics everywhere with different details, "
        "so matching these correlations reproduces the texture (or the brush strokes and palette of "
        "a style) without copying the layout.",
        ("the sum over positions makes the Gram matrix invariant to where features are",
         "texture/style is stationary: co-occurrence statistics describe it without the layout")),
    "q05_content_layer": Rubric(
        "A larger style weight makes the image match the painting's feature statistics at the "
        "expense of the photo's content: detail, exact edges and colors are given up for strokes and "
        "palette. The content loss at one deep layer keeps the arrangement of objects but leaves the "
        "colors and fine texture free for the style (pixel loss would forbid any change). Style "
        "statistics differ with scale, so several layers, from shallow to deep, capture both fine "
        "strokes and larger patterns.",
        ("more style weight trades the photo's detail/colors/fidelity for the style's statistics",
         "content at a deep layer keeps layout but not pixels; style over several layers covers "
         "several scales")),
    "q06_instance_norm": Rubric(
        "Instance norm normalizes each channel of each image with that image's own mean and "
        "variance, so the content image's contrast and brightness are removed before the style is "
        "painted, and the output depends on that image alone, the same at training and test time. "
        "Batch norm uses the statistics of the batch (running averages at test time), so the "
        "output depends on the other images and on the photo's contrast.",
        ("per-image, per-channel normalization removes the content image's contrast/brightness",
         "batch norm's statistics come from the batch/training set, not the image: output depends "
         "on them")),
    "q06_conditional_norm": Rubric(
        "All styles share the convolutions; each style has only its own scale and shift (gamma, "
        "beta) for every instance-norm channel. After normalization these set the mean and spread "
        "of every feature channel, and a style is largely such feature statistics (as Gram "
        "matrices and AdaIN show), so a per-style affine transform of normalized features is "
        "enough; mixing those parameters interpolates the styles.",
        ("a style is the per-channel scale and shift of the conditional instance norms; convolutions "
         "are shared", "style is mostly in feature statistics (means/variances), which those "
         "parameters set")),
    "q06_checkerboard": Rubric(
        "A transposed convolution with stride s paints each input pixel's kernel into the output; "
        "when the kernel size is not a multiple of the stride, the kernels overlap unevenly, so some "
        "output pixels get more contributions than others in a pattern that repeats with period s: "
        "a grid at the stride frequency (Odena et al. 2016). Resizing first (nearest or bilinear) "
        "and then convolving treats every output pixel the same way.",
        ("uneven overlap of the transposed kernels (size not divisible by the stride) gives a "
         "periodic pattern", "resize-then-convolve gives every output pixel the same number of "
         "contributions")),
}


@dataclass(frozen=True)
class ScoreProblem:
    """A row of ``written_scores.csv`` that was not merged, and why."""

    line: int
    student: str
    question: str
    reason: str

    def __str__(self) -> str:
        return f"written_scores.csv line {self.line} ({self.student!r}, {self.question!r}): {self.reason}"


# --------------------------------------------------------------------------- a submission's answers


def _notebook_stems() -> list[str]:
    return sorted({q.notebook for q in QUESTIONS.values()})


def _zip_notebooks(path: Path) -> dict[str, bytes]:
    """``stem: bytes`` of the shallowest ``<stem>.ipynb`` of each questioned notebook in the zip
    (read at most :data:`MAX_NOTEBOOK_BYTES`, so a zip bomb costs nothing). The zip is opened as a
    regular file only: never through a link, never a pipe."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        with zipfile.ZipFile(f) as zf:
            wanted = {f"{stem}.ipynb": stem for stem in _notebook_stems()}
            found: dict[str, tuple[int, zipfile.ZipInfo]] = {}
            for info in zf.infolist():
                parts = info.filename.replace("\\", "/").split("/")
                stem = wanted.get(parts[-1])
                if stem is None or info.is_dir() or ".." in parts or info.filename.startswith("/"):
                    continue
                if stem not in found or len(parts) < found[stem][0]:
                    found[stem] = (len(parts), info)
            out = {}
            for stem, (_, info) in found.items():
                with zf.open(info) as member:
                    data = member.read(MAX_NOTEBOOK_BYTES + 1)
                if len(data) <= MAX_NOTEBOOK_BYTES:
                    out[stem] = data
            return out


def _folder_notebooks(path: Path) -> dict[str, bytes]:
    """``stem: bytes`` of ``notebooks/<stem>.ipynb`` (or ``<stem>.ipynb``) in the folder: regular
    files only, no link followed, a FIFO never blocks."""
    out = {}
    for stem in _notebook_stems():
        for parts in (("notebooks", f"{stem}.ipynb"), (f"{stem}.ipynb",)):
            try:
                out[stem] = read_regular(path, *parts, max_bytes=MAX_NOTEBOOK_BYTES)
                break
            except OSError:
                continue
    return out


def submission_answers(path: Path) -> dict[str, str]:
    """``question id: answer`` (``""`` when none) from a submission (a ``.zip`` or a folder)."""
    path = Path(path)
    try:
        raw = _zip_notebooks(path) if path.suffix == ".zip" and not path.is_dir() else _folder_notebooks(path)
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError, NotImplementedError):
        raw = {}
    found: dict[str, str] = {}
    for stem, data in raw.items():
        try:
            notebook = json.loads(data.decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            continue
        found.update({qid: text for qid, text in notebook_answers(notebook).items()
                      if QUESTIONS[qid].notebook == stem})
    return {qid: found.get(qid, "") for qid in QUESTIONS}


def student_written(scores: dict[str, dict]) -> dict[str, dict]:
    """One student's written questions for the feedback and the CSV: ``question id: {"points" (None
    until graded), "max_points", "comment"}``, from that student's merged rows."""
    return {qid: {"points": scores.get(qid, {}).get("points"), "max_points": q.points,
                  "comment": scores.get(qid, {}).get("comment", "")} for qid, q in QUESTIONS.items()}


# --------------------------------------------------------------------------- the TAs' pages

_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.45; }
.rubric { background: #f3f6fa; padding: .5em 1.5em; border-left: 4px solid #4a78b0; }
.answer { border-top: 1px solid #ccc; padding-top: .5em; margin-top: 1.2em; }
.answer pre { white-space: pre-wrap; font-family: inherit; background: #fafafa; padding: .6em; }
.empty { color: #a00; }
"""


def _page(question_id: str, answers: dict[str, str]) -> str:
    q = QUESTIONS[question_id]
    rubric = RUBRICS[question_id]
    esc = html.escape
    share = q.points / len(rubric.points)
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{esc(q.id)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(q.id)} ({q.points:g} points): {esc(q.title)}</h1>",
        f"<p>Notebook <code>{esc(q.notebook)}.ipynb</code>.</p>",
        f"<p>{esc(q.text)}</p>",
        "<div class='rubric'><h2>Rubric</h2><ul>",
        *[f"<li>{esc(point)} ({share:g} point{'' if share == 1 else 's'})</li>" for point in rubric.points],
        "</ul>", f"<p><b>Model answer.</b> {esc(rubric.answer)}</p></div>",
        f"<h2>Answers ({sum(bool(a) for a in answers.values())} of {len(answers)})</h2>",
    ]
    for student, text in answers.items():
        body = f"<pre>{esc(text)}</pre>" if text else "<p class='empty'>(no answer)</p>"
        parts.append(f"<div class='answer' id='{esc(student, quote=True)}'><h3>{esc(student)}</h3>"
                     f"{body}</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_question_pages(out_dir: Path, answers: dict[str, dict[str, str]]) -> list[Path]:
    """One page per question in ``out_dir`` (``<id>.html``) and an ``index.html``; ``answers`` is
    ``student: {question id: answer}``. Returns the pages' paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for qid in QUESTIONS:
        path = out_dir / f"{qid}.html"
        write_atomic(path, _page(qid, {student: found.get(qid, "") for student, found in answers.items()}))
        pages.append(path)
    rows = "".join(f"<li><a href='{html.escape(q.id)}.html'>{html.escape(q.id)}</a> ({q.points:g} points): "
                   f"{html.escape(q.title)}</li>" for q in QUESTIONS.values())
    write_atomic(out_dir / "index.html", f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Written "
                  f"questions</title><style>{_STYLE}</style></head><body><h1>Written questions</h1>"
                  f"<p>Score them in <code>written_scores.csv</code>, then run the class grader again.</p>"
                  f"<ul>{rows}</ul></body></html>\n")
    return pages


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new
    file, never half of one."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the TAs' scores

def _read_rows(path: Path) -> list[tuple[int, dict]]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in SCORE_COLUMNS[:3] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: the header must hold the columns {', '.join(SCORE_COLUMNS)}; "
                             f"missing {', '.join(missing)}")
        return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def update_scores_sheet(path: Path, students: list[str]) -> int:
    """Make ``path`` hold a row for every student and question (blank points for TAs to fill),
    keeping every existing row as it is (filled or not, known or not); return the rows added."""
    path = Path(path)
    rows = [row for _, row in _read_rows(path)]
    have = {(row.get("student", ""), row.get("question", "")) for row in rows}
    added = [{"student": s, "question": q, "points": "", "comment": ""}
             for s in students for q in QUESTIONS if (s, q) not in have]
    if added or not path.exists():
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=SCORE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows + added:
                writer.writerow({k: row.get(k, "") for k in SCORE_COLUMNS})
        os.replace(tmp, path)
    return len(added)


def read_scores(path: Path, students) -> tuple[dict[str, dict[str, dict]], list[ScoreProblem]]:
    """The filled rows of ``path`` as ``student: {question: {"points", "comment"}}``, and the rows
    that could not be merged. A row with blank points is not graded yet (neither merged nor a
    problem) unless it carries a comment."""
    students = set(students)
    scores: dict[str, dict[str, dict]] = {}
    problems: list[ScoreProblem] = []
    for line, row in _read_rows(path):
        student, qid, raw = row.get("student", ""), row.get("question", ""), row.get("points", "")
        comment = row.get("comment", "")

        def problem(reason, line=line, student=student, qid=qid):
            problems.append(ScoreProblem(line, student, qid, reason))

        if student not in students:
            problem("unknown student id (no submission of that name in this class)")
        elif qid not in QUESTIONS:
            problem(f"unknown question id; the questions are {', '.join(QUESTIONS)}")
        elif raw == "":
            if comment:
                problem("a comment without points: give the points (0 is allowed)")
        else:
            try:
                points = float(raw)
            except ValueError:
                problem(f"points {raw!r} is not a number")
                continue
            top = QUESTIONS[qid].points
            if not math.isfinite(points) or not 0 <= points <= top:
                problem(f"points {raw} outside 0 .. {top:g}")
            elif qid in scores.get(student, {}):
                problem("a second row for the same student and question (the first one is kept)")
            else:
                scores.setdefault(student, {})[qid] = {"points": points, "comment": comment}
    return scores, problems

