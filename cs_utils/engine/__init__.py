"""The engine: what makes the lessons fast, and nobody is asked to read.

* :mod:`~cs_utils.engine.folding`: a copy of a network with its batch norm folded into the
  convolutions (torch's ``fuse_conv_bn_weights``; ``folded_copy``, ``gradient_network``), what
  the gradient techniques, texture synthesis and style transfer run on;
* :mod:`~cs_utils.engine.incremental_occlusion`: ``IncrementalNetwork``, a network that computes
  the scores of images that differ from a reference image in a small region only where they
  differ (Nakandala et al. 2019), what the occlusion loop runs on, with
  :mod:`~cs_utils.engine.network_ops` (the network compiled into operations it can run on windows);
* :mod:`~cs_utils.engine.lbfgs`: ``LBFGS``, ``torch.optim.LBFGS``'s steps with less work around
  each evaluation;
* :mod:`~cs_utils.engine.gram`: ``gram_losses``, the style loss with its backward written out;
* :mod:`~cs_utils.engine.batch_size`: the fastest batch size, measured once per network.

The rule. The engine never computes an exercise's answer without calling the student's function:
it makes networks and optimisers faster and supplies backward passes, while every exercise's
result comes from the exercise's function, looked up when it runs (the student's in the release
and under the grader). So ``gram_losses`` takes its Gram matrices from
``cs_utils.losses.gram_matrix`` and its value from ``cs_utils.losses.style_loss``, and
``IncrementalNetwork`` returns a network's scores: the occluded copies, probabilities, drops and
map are ``cs_utils.occlusion_map``'s. A lesson module calls the engine, always outside an
exercise's solution region (``### BEGIN SOLUTION`` / ``### END SOLUTION``), so that a stripped
exercise stays what the student writes. ``tests/test_release_audit.py`` holds the engine, and every
other shipped callable, to it: none may pass an exercise's check on its own.
"""

__all__: list[str] = []   # the engine is reached through its modules
