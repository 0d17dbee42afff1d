"""The instructor's tools, apart from the lecture's techniques in ``cs_utils``.

* :mod:`~cs_utils.course.grading` with :mod:`~cs_utils.course.exercise_registry` and the
  ``exercises_*`` modules: the golden checks of the exercises (``cs.check_exercise``, the public
  cases); :mod:`~cs_utils.course.hidden_cases`: the hidden cases drawn at grading time;
* the autograder: :mod:`~cs_utils.course.grade` (command line), :mod:`~cs_utils.course.autograder`
  (one submission), :mod:`~cs_utils.course.sandbox` with :mod:`~cs_utils.course.sandbox_runner`
  (where a submission runs), :mod:`~cs_utils.course.class_grading` (a whole class),
  :mod:`~cs_utils.course.gradescope` (the autograder zip) and :mod:`~cs_utils.course.report`
  (the table and the feedback);
* :mod:`~cs_utils.course.release`: the student release (solutions replaced by TODOs, its README and
  Makefile from ``templates/``); :mod:`~cs_utils.course.student`: the release's ``make check`` and
  ``make submit`` (shipped to students, with the golden checks and :mod:`~cs_utils.course.report`);
* :mod:`~cs_utils.course.render`: execute and render the notebooks;
* :mod:`~cs_utils.course.train_weights`: train the fast-style networks again;
* :mod:`~cs_utils.course.train_topics`: train the small networks of notebook 06's later sections
  (decoders, U-Nets, the adversarial stylizer) again.
"""

__all__: list[str] = []
