"""cs_utils: helpers for the "Visualizing and Understanding CNNs" notebooks.

Importing the package does no work: nothing is downloaded, seeded, chosen or
configured until you call a function.

The public API has two tiers. The names below (``cs_utils.__all__``) are what a
notebook calls: ``import cs_utils as cs`` and ``cs.saliency_map(...)``. Everything
else (result types, settings, building blocks) is reached through its module, e.g.
``cs_utils.optimize.FourierImage``, ``cs_utils.checks.check_image``,
``cs_utils.adversarial.AttackHistory``; each module lists its own ``__all__``.
"""

from .activating_patches import crop_patches, top_activations
from .adversarial import difference_image, fgsm, fooling_image, fooling_step, pgd, reload_as_png
from .adversarial_style import load_stylizer, style_aware_content_loss, transformed_image_loss
from .attribution import class_activation_map, grad_cam, guided_grad_cam, integrated_gradients, smooth_grad
from .bias import bias_experiment, marker_box, marker_share, shortcut_sets, stamp_marker
from .class_viz import (
    channel_objective,
    class_ranks,
    class_score_objective,
    class_visualization,
    class_visualization_step,
    neuron_objective,
    representation_objective,
    stretch_contrast,
)
from .course.exercise_registry import rel_error
from .course.grading import check as check_exercise
from .data import imagenet_index, imagenet_label, imagenet_labels, sample_image, sample_images
from .dream import deepdream, deepdream_step, invert_features, octave_sizes
from .evaluation import (
    cascading_randomization,
    deletion_curve,
    evaluation_table,
    insertion_curve,
    rank_correlation,
)
from .explorer import explore
from .fast_style import (
    HELD_OUT_PHOTOS,
    ConditionalInstanceNorm,
    TransformerNet,
    instance_norm,
    load_fast_style,
    stylize,
    train_fast_style,
    training_photos,
)
from .feature_viz import layer_tour, mean_pairwise_cosine, multifaceted_visualization
from .history import History
from .hooks import (
    capture_activations,
    capture_gradients,
    evaluating,
    extract_features,
    get_layer,
    layer_names,
)
from .image import load_image, save_image, to_numpy, to_pil
from .image_stats import (
    clipped_share,
    high_frequency_share,
    photo_statistics,
    shifted_crop,
    tone_statistics,
)
from .labelled_images import load_labelled_images
from .layer_maps import activation_maps, show_activation_maps, show_filter_channels, zero_channel_share
from .losses import content_loss, gram_matrix, style_loss, tv_loss
from .models import CONTENT_LAYER, MODEL_NAMES, STYLE_LAYERS, load_model
from .neighbours import (
    compute_features,
    embed_2d,
    gallery_with_copies,
    knn_accuracy,
    nearest_neighbours,
    place_randomly,
    random_crops,
)
from .objectives import Objective
from .optimize import L2Penalty, optimize_image
from .receptive_fields import receptive_field
from .runtime import budget, get_device, seed_everything
from .saliency import gradient_image, guided_backprop, occlusion_map, occlusion_windows, saliency_map
from .segmentation import grabcut_from_saliency
from .small_cnn import SmallCNN, classifier_accuracy, filter_images, filter_smoothness, train_classifier
from .style import (
    STYLE_NAMES,
    load_style,
    mix_styles,
    normalized_layer_weights,
    style_distance,
    style_images,
    style_targets,
    style_transfer,
    synthesize_texture,
)
from .style_strength import match_channel_statistics, relative_style_distance
from .texture import TEXTURE_NAMES, copy_fraction, efros_leung, load_texture
from .unet import load_unet, mask_iou, predict_masks, synthetic_shapes
from .upsampling import load_decoder_net, power_profile, stride_energy
from .viz import (
    overlay_heatmap,
    plot_embedding,
    show_filters,
    show_image_rows,
    show_images,
    show_maps,
    show_thumbnails,
)

__version__ = "0.1.0"

__all__ = [
    # setup: device, seeds, budget, models, photos and labels
    "budget", "get_device", "seed_everything",
    "MODEL_NAMES", "load_model",
    "imagenet_index", "imagenet_label", "imagenet_labels", "sample_image", "sample_images",
    "load_image", "save_image", "to_numpy", "to_pil",
    # hooks: activations and gradients of any layer
    "capture_activations", "capture_gradients", "evaluating", "extract_features", "get_layer", "layer_names",
    # 01: filters, neighbours, embeddings, receptive fields, activating patches
    "SmallCNN", "classifier_accuracy", "filter_images", "filter_smoothness", "train_classifier",
    "load_labelled_images",
    "compute_features", "embed_2d", "gallery_with_copies", "knn_accuracy", "nearest_neighbours",
    "place_randomly", "random_crops",
    "receptive_field", "crop_patches", "top_activations",
    "activation_maps", "show_activation_maps", "show_filter_channels", "zero_channel_share",
    # 02: which pixels matter
    "saliency_map", "occlusion_map", "occlusion_windows", "guided_backprop", "gradient_image",
    "cascading_randomization", "deletion_curve", "rank_correlation", "grabcut_from_saliency",
    "class_activation_map", "grad_cam", "guided_grad_cam", "integrated_gradients", "smooth_grad",
    "insertion_curve", "evaluation_table",
    "bias_experiment", "marker_box", "marker_share", "shortcut_sets", "stamp_marker",
    # 03: class visualization and adversarial images
    "Objective", "channel_objective", "class_score_objective", "neuron_objective", "representation_objective",
    "class_visualization", "class_visualization_step", "class_ranks", "stretch_contrast",
    "optimize_image", "L2Penalty", "History",
    "clipped_share", "high_frequency_share", "photo_statistics", "shifted_crop",
    "multifaceted_visualization", "mean_pairwise_cosine", "layer_tour",
    "fooling_step", "fooling_image", "fgsm", "pgd", "difference_image", "reload_as_png",
    # 04: DeepDream and feature inversion
    "deepdream", "deepdream_step", "octave_sizes", "invert_features",
    # 05: texture synthesis and style transfer
    "content_loss", "gram_matrix", "style_loss", "tv_loss",
    "CONTENT_LAYER", "STYLE_LAYERS", "STYLE_NAMES", "load_style", "style_images", "style_targets",
    "mix_styles", "style_distance", "style_transfer", "synthesize_texture", "normalized_layer_weights",
    "tone_statistics",
    "TEXTURE_NAMES", "copy_fraction", "efros_leung", "load_texture",
    # 06: fast style transfer
    "HELD_OUT_PHOTOS", "ConditionalInstanceNorm", "TransformerNet", "instance_norm", "load_fast_style",
    "stylize", "train_fast_style", "training_photos",
    "load_decoder_net", "power_profile", "stride_energy",
    "load_unet", "mask_iou", "predict_masks", "synthetic_shapes",
    "load_stylizer", "style_aware_content_loss", "transformed_image_loss",
    "match_channel_statistics", "relative_style_distance",
    # plots
    "overlay_heatmap", "plot_embedding", "show_filters", "show_image_rows", "show_images", "show_maps",
    "show_thumbnails",
    # exercises
    "check_exercise", "rel_error",
    # lectures: the live explorer
    "explore",
]
