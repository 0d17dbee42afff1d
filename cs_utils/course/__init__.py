"""The course's tools that ship to students, beside the lecture's techniques in ``cs_utils``.

* :mod:`~cs_utils.course.grading` with :mod:`~cs_utils.course.exercise_registry` and the
  ``exercises_*`` modules: the golden checks of the exercises (``cs.check_exercise``, the public
  cases);
* :mod:`~cs_utils.course.student`: the release's ``make check`` and ``make submit``, with
  :mod:`~cs_utils.course.syntax_check`; :mod:`~cs_utils.course.report`: the score table and the
  feedback (the grader writes the same layout).

What never ships (the grader, the hidden cases, the release and render tools, training) lives in
:mod:`cs_utils.instructor`.
"""

__all__: list[str] = []
