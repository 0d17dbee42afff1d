"""The written questions: what each notebook asks after its figures, and the student's answers.

Every question has an id, its notebook, its points and its text (:data:`QUESTIONS`). In the
notebook it is two markdown cells, right after the figure it is about:

* the question cell, ``### Question <id> (<points> points)`` and the text
  (:func:`question_markdown`), with ``{"cs_utils": {"question": id}}`` in its metadata;
* the answer cell, the student's to write, with ``{"cs_utils": {"answer": id}}`` in its metadata
  and :data:`ANSWER_PROMPT` as its only line until the student replaces it.

:func:`notebook_answers` reads the answers of a notebook (the cells found by their metadata, or
the markdown cell right after the question cell when a student's edit lost the metadata);
``make check`` lists the unanswered ones (:func:`unanswered`). The model answers and rubrics are
the instructor's and never ship (``cs_utils/instructor/written.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ANSWER_PROMPT", "QUESTIONS", "Question", "answer_text", "cell_answer", "cell_question",
           "notebook_answers", "question_markdown", "read_answers", "unanswered"]

#: The answer cell's text in the release; what a student leaves of it is not an answer.
ANSWER_PROMPT = "*Your answer (double-click this cell, replace this line, then save the notebook):*"
#: A notebook larger than this is not read for answers (a submission's notebook is not trusted).
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
#: An answer longer than this is cut (a paragraph or two is expected).
MAX_ANSWER_CHARS = 20_000


@dataclass(frozen=True)
class Question:
    """One written question: ``notebook`` is the notebook's file stem, ``text`` the question in
    Markdown (what the student reads under the heading)."""

    id: str
    notebook: str
    points: int
    title: str
    text: str


QUESTIONS: dict[str, Question] = {}


def _ask(id: str, notebook: str, points: int, title: str, text: str) -> None:
    QUESTIONS[id] = Question(id, notebook, points, title, " ".join(text.split()))


# --------------------------------------------------------------------------- 01: filters, neighbors, t-SNE
_ask("q01_filters", "01_filters_and_tsne", 2, "why first-layer filters are readable",
     """After training, the first-layer filters look like oriented edges and color blobs, and you could
     draw them as small images. Why can the first layer's filters be read as pictures, and why does
     the same drawing say little for the second layer's filters?""")
_ask("q01_flipped_neighbors", "01_filters_and_tsne", 2, "a mirrored photo in pixel and feature space",
     """A mirrored or shifted copy of a photo is far from the original in pixel space but its nearest
     neighbor in feature space. Explain both halves.""")
_ask("q01_tsne", "01_filters_and_tsne", 2, "what t-SNE keeps",
     """t-SNE separates the classes of the features more clearly than PCA does. What does t-SNE
     preserve that PCA does not, and what should you *not* read from the distances between
     t-SNE's clusters?""")
# --------------------------------------------------------------------------- 02: saliency and occlusion
_ask("q02_occlusion_vs_saliency", "02_saliency_and_occlusion", 2, "coarse occlusion, speckled gradients",
     """Saliency and occlusion roughly agree on where the evidence is, yet the occlusion map is
     coarse and smooth while the saliency map is speckled. Explain each of the two looks from how
     the map is computed.""")
_ask("q02_guided_randomization", "02_saliency_and_occlusion", 2, "guided backprop and randomized layers",
     """Guided backprop's map barely changes when the top layers are replaced by random weights, and
     it hardly depends on the class explained. What does that say about what guided backprop
     shows, and why is it a poor explanation of the classifier's decision?""")
_ask("q02_gradcam_layer", "02_saliency_and_occlusion", 2, "Grad-CAM at an early layer",
     """Grad-CAM weights the last convolutional layer's maps. What would its map look like if you
     computed it at an early layer (say `blocks.2`), and why?""")
# --------------------------------------------------------------------------- 03: class images, adversarial
_ask("q03_why_regularize", "03_class_viz_and_adversarial", 2, "why class images need regularization",
     """Plain gradient ascent on a class score gives high-frequency noise that the network scores
     very highly. Why does the ascent find such an image, and what do the regularizers (L2, blur,
     jitter) change about the images it can reach?""")
_ask("q03_adversarial_linear", "03_class_viz_and_adversarial", 2, "why tiny perturbations fool",
     """A change of at most 8/255 per pixel, invisible to you, makes the network predict a class of
     your choice with high confidence. Why can such a small change per pixel move the score so
     much?""")
# --------------------------------------------------------------------------- 04: DeepDream and inversion
_ask("q04_dream_depth", "04_deepdream_and_inversion", 2, "shallow and deep dreams",
     """Dreaming at `blocks.2` paints fine stripes and small repeated textures; dreaming at
     `blocks.10` paints eyes, fur and animal-like parts. Why does the layer decide what is
     painted?""")
_ask("q04_inversion_depth", "04_deepdream_and_inversion", 2, "what deep features forget",
     """Inverting deeper layers loses the photo's colors and exact positions first, but keeps
     object parts. Why do deeper features forget these things, and why does the inversion need a
     regularizer to give a picture at all?""")
# --------------------------------------------------------------------------- 05: texture and style transfer
_ask("q05_gram_forgets_where", "05_texture_and_style_transfer", 2, "why a Gram matrix forgets where",
     """Why does a Gram matrix forget *where* things are in the image, and why is that exactly what a
     texture, or a painting's style, needs?""")
_ask("q05_content_layer", "05_texture_and_style_transfer", 2, "what the style weight trades away",
     """Raising the style weight moves the result from the photo towards the painting. What does it
     trade away, and why does the content loss use one deep layer (not the pixels) when the style
     loss uses several layers?""")
# --------------------------------------------------------------------------- 06: fast style transfer
_ask("q06_instance_norm", "06_fast_style_transfer", 2, "why instance norm suits stylization",
     """Washing out the photo's contrast changes the batch-norm network's output far more than the
     instance-norm network's. Why does instance norm suit stylization better than batch norm?""")
_ask("q06_conditional_norm", "06_fast_style_transfer", 2, "four styles in one network",
     """The four-style network adds only a few thousand numbers per style to a network of millions.
     Where does a style live in it, and why is that enough?""")
_ask("q06_checkerboard", "06_fast_style_transfer", 2, "the transposed convolution's grid",
     """Why does the transposed-convolution decoder leave a fine grid on its output, and why does
     resize-then-convolve not?""")


def question_markdown(question: Question) -> str:
    """The question cell's Markdown."""
    unit = "point" if question.points == 1 else "points"
    return f"### Question {question.id} ({question.points} {unit})\n\n{question.text}"


def _text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _tag(cell: dict, key: str) -> str | None:
    meta = cell.get("metadata")
    value = meta.get("cs_utils") if isinstance(meta, dict) else None
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) and found in QUESTIONS else None


def cell_question(cell: dict) -> str | None:
    """The id of the registered question a cell asks (its metadata says so), else None."""
    return _tag(cell, "question")


def cell_answer(cell: dict) -> str | None:
    """The id of the registered question a cell answers (its metadata says so), else None."""
    return _tag(cell, "answer")


def answer_text(cell_source: str) -> str:
    """What the student wrote in an answer cell: its text without :data:`ANSWER_PROMPT`, stripped."""
    text = str(cell_source).replace(ANSWER_PROMPT, "").strip()
    return text[:MAX_ANSWER_CHARS]


def notebook_answers(notebook: dict) -> dict[str, str]:
    """``question id: answer`` for every question of :data:`QUESTIONS` found in a notebook (parsed
    JSON); ``""`` for a question whose answer cell is still empty. Answer cells are found by their
    metadata; a question cell without any is answered by the markdown cell that follows it."""
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        return {}
    cells = [c for c in cells if isinstance(c, dict)]
    answers: dict[str, list[str]] = {}
    asked: list[tuple[int, str]] = []
    for k, cell in enumerate(cells):
        if qid := cell_answer(cell):
            answers.setdefault(qid, []).append(answer_text(_text(cell)))
        elif qid := cell_question(cell):
            asked.append((k, qid))
    for k, qid in asked:
        if qid not in answers:
            after = cells[k + 1] if k + 1 < len(cells) else None
            answerable = (after is not None and after.get("cell_type") == "markdown"
                          and not cell_question(after))
            answers[qid] = [answer_text(_text(after))] if answerable else [""]
    return {qid: "\n\n".join(a for a in parts if a)[:MAX_ANSWER_CHARS] for qid, parts in answers.items()}


def read_answers(notebooks_dir: Path) -> dict[str, str]:
    """``question id: answer`` (``""`` when unanswered or missing) for every question, read from
    ``notebooks_dir/<notebook>.ipynb``. A notebook that is missing, too large or not JSON answers
    nothing."""
    found: dict[str, str] = {}
    for stem in sorted({q.notebook for q in QUESTIONS.values()}):
        path = Path(notebooks_dir, f"{stem}.ipynb")
        try:
            if not path.is_file() or path.stat().st_size > MAX_NOTEBOOK_BYTES:
                continue
            notebook = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError, RecursionError):
            continue
        for qid, text in notebook_answers(notebook).items():
            if QUESTIONS[qid].notebook == stem:
                found[qid] = text
    return {qid: found.get(qid, "") for qid in QUESTIONS}


def unanswered(notebooks_dir: Path) -> list[Question]:
    """The questions whose answer cell is still empty (or whose notebook is missing)."""
    answers = read_answers(notebooks_dir)
    return [q for q in QUESTIONS.values() if not answers[q.id]]
