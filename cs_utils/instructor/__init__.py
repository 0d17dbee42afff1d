"""What never ships to students: the grader and everything that computes an answer for it.

The release (:mod:`~cs_utils.instructor.release`) and the grading sandbox leave this whole folder
out, by one rule (:func:`~cs_utils.instructor.release.instructor_only`); everything else under
``cs_utils/`` ships with its solutions stripped.

* the autograder: :mod:`~cs_utils.instructor.grade` (command line), :mod:`~cs_utils.instructor.autograder`
  (one submission, opened by :mod:`~cs_utils.instructor.submission`, each exercise judged by
  :mod:`~cs_utils.instructor.judging`), :mod:`~cs_utils.instructor.sandbox` with
  :mod:`~cs_utils.instructor.sandbox_runner` and :mod:`~cs_utils.instructor.sandbox_files` (where a
  submission runs, and the copy of the project it sees), :mod:`~cs_utils.instructor.isolation` (the
  sandbox accounts, root-only folders, reading what a submission wrote) with
  :mod:`~cs_utils.instructor.cgroups`, :mod:`~cs_utils.instructor.results` (its result files),
  :mod:`~cs_utils.instructor.class_grading` (a whole class),
  :mod:`~cs_utils.instructor.gradescope` (the autograder zip), :mod:`~cs_utils.instructor.hidden_cases`
  (the hidden cases drawn at grading time and their reference outputs);
* :mod:`~cs_utils.instructor.release`: the student release (solutions replaced by TODOs, its README and
  Makefile from ``templates/``);
* :mod:`~cs_utils.instructor.render`: execute and render the notebooks;
* :mod:`~cs_utils.instructor.train_weights`, :mod:`~cs_utils.instructor.train_topics` and
  :mod:`~cs_utils.instructor.train_fast_style`: train the networks of notebook 06 again.
"""

__all__: list[str] = []
