"""The golden checks under their short name: ``cs_utils.grading.check("gram_matrix")``.

The code lives in :mod:`cs_utils.course.grading`, with the other instructor's tools.
"""

from .course.grading import *  # noqa: F403 - this module is the short name of course.grading
from .course.grading import __all__  # noqa: F401
