"""The hostile class (tests/hostile_submissions.py) graded in the fallback sandbox.

The tests are tests/attack_suite.py's.
"""

from attack_suite import (  # noqa: F401 - the tests, run here in this mode
    hostile_run,
    test_a_formula_in_a_student_id_is_quoted_in_the_csv,
    test_every_attack_scores_zero_with_the_status_that_stopped_it,
    test_no_student_touched_another_or_the_grader,
    test_nothing_of_the_sandbox_accounts_outlives_the_grading,
    test_the_hog_left_its_neighbour_whole,
    test_the_other_exercises_of_each_student_are_graded_normally,
    test_the_report_says_which_mode_and_which_uid_graded,
)

MODE = "fallback"
