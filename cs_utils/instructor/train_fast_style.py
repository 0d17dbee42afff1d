"""``python -m cs_utils.instructor.train_fast_style``: train a fast-style network on a folder of photos.

::

    python -m cs_utils.instructor.train_fast_style --images DIR --style starry_night --out starry.pt
    torchrun --nproc_per_node=2 -m cs_utils.instructor.train_fast_style --images DIR --style starry_night

See :mod:`cs_utils.style_training` (``--help`` lists the options). The command lives with the
instructor's tools; the training function itself is :func:`cs_utils.train_fast_style`.
"""

import sys

from ..style_training import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
