"""cs_utils: helpers for the "Visualizing and Understanding CNNs" notebooks.

Importing the package does no work: nothing is downloaded, seeded, chosen or
configured until you call a function.
"""

from .adversarial import (
    AttackHistory,
    fgsm,
    fooling_image,
    fooling_step,
    pgd,
    quantize_8bit,
)
from .data import (
    DATA_DIR,
    SampleImage,
    imagenet_index,
    imagenet_label,
    imagenet_labels,
    sample_image,
    sample_images,
)
from .dream import (
    deepdream,
    deepdream_step,
    dream_octaves,
    invert_features,
    octave_sizes,
    relative_feature_error,
)
from .hooks import (
    capture_activations,
    capture_gradients,
    evaluating,
    extract_features,
    get_layer,
    layer_names,
)
from .image import check_image, load_image, save_image, to_numpy, to_pil
from .losses import content_loss, gram_matrix, style_loss, tv_loss
from .models import MODEL_NAMES, load_model
from .optimize import History, optimize_image
from .runtime import Budget, budget, get_device, is_fast, seed_everything
from .style import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    STYLE_NAMES,
    StyleTargets,
    load_style,
    mix_styles,
    noise_image,
    style_images,
    style_targets,
    style_transfer,
    synthesize_texture,
)
from .texture import TEXTURE_NAMES, copy_fraction, efros_leung, load_texture
from .viz import overlay_heatmap, show_images

__version__ = "0.1.0"

__all__ = [
    "tv_loss",
    "style_loss",
    "gram_matrix",
    "content_loss",
    "DATA_DIR",
    "MODEL_NAMES",
    "Budget",
    "History",
    "STYLE_NAMES",
    "SampleImage",
    "budget",
    "capture_activations",
    "capture_gradients",
    "check_image",
    "evaluating",
    "extract_features",
    "get_device",
    "get_layer",
    "imagenet_index",
    "imagenet_label",
    "imagenet_labels",
    "is_fast",
    "layer_names",
    "load_image",
    "load_model",
    "load_style",
    "optimize_image",
    "overlay_heatmap",
    "sample_image",
    "sample_images",
    "save_image",
    "seed_everything",
    "show_images",
    "style_images",
    "CONTENT_LAYER",
    "STYLE_LAYERS",
    "StyleTargets",
    "mix_styles",
    "noise_image",
    "style_targets",
    "style_transfer",
    "synthesize_texture",
    "TEXTURE_NAMES",
    "copy_fraction",
    "efros_leung",
    "load_texture",
    "to_numpy",
    "to_pil",
    "AttackHistory",
    "fgsm",
    "fooling_image",
    "fooling_step",
    "pgd",
    "quantize_8bit",
    "deepdream",
    "deepdream_step",
    "dream_octaves",
    "invert_features",
    "octave_sizes",
    "relative_feature_error",
]
