"""The instructor's tools, apart from the lecture's techniques in ``cs_utils``.

* :mod:`~cs_utils.course.grading` with :mod:`~cs_utils.course.exercise_registry` and the
  ``exercises_*`` modules: the golden checks of the exercises (``cs.check_exercise``);
* :mod:`~cs_utils.course.grade`: the autograder (one submission, a whole class, Gradescope),
  running each submission in a sandbox (:mod:`~cs_utils.course.sandbox`);
* :mod:`~cs_utils.course.release`: the student release (solutions replaced by TODOs);
* :mod:`~cs_utils.course.render`: execute and render the notebooks;
* :mod:`~cs_utils.course.train_weights`: train the fast-style networks again.
"""

__all__: list[str] = []
