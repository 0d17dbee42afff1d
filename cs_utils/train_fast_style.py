"""``python -m cs_utils.train_fast_style``: train a fast-style network on a folder of photos.

::

    python -m cs_utils.train_fast_style --images DIR --style starry_night --out starry.pt
    torchrun --nproc_per_node=2 -m cs_utils.train_fast_style --images DIR --style starry_night

See :mod:`cs_utils.style_training` (``--help`` lists the options). The package's function of
the same name, ``cs_utils.train_fast_style`` (:func:`cs_utils.fast_style.train_fast_style`),
stays callable after this module is imported: Python then binds the package attribute to this
module, so calling the module calls that function.
"""

import sys
import types

from .fast_style import train_fast_style as _train_fast_style
from .style_training import main

__all__ = ["main"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _train_fast_style(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
