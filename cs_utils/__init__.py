"""cs_utils: helpers for the "Visualizing and Understanding CNNs" notebooks.

Importing the package does no work: nothing is downloaded, seeded, chosen or
configured until you call a function.

The public API has two tiers. The names below (``cs_utils.__all__``) are what a
notebook calls: ``import cs_utils as cs`` and ``cs.saliency_map(...)``. Everything
else (result types, settings, building blocks) is reached through its module, e.g.
``cs_utils.parameterizations.FourierImage``, ``cs_utils.validation.validate_image``,
``cs_utils.adversarial.AttackHistory``; each module lists its own ``__all__``. The one module
in ``__all__``, :mod:`cs_utils.objectives`, is the vocabulary notebook 03 composes objectives
from (``cs.objectives.channel(model, layer, c)``).
"""

from . import objectives
from .activating_patches import crop_patches, top_activations
from .adversarial import difference_image, fgsm, fooling_image, fooling_step, pgd, reload_as_png
from .adversarial_style import load_stylizer, transformed_image_loss
from .attribution import class_activation_map, grad_cam, guided_grad_cam, integrated_gradients, smooth_grad
from .bias import bias_experiment
from .class_viz import class_visualization, class_visualization_step, stretch_contrast
from .course.exercise_registry import rel_error
from .course.grading import check as check_exercise
from .data import imagenet_index, imagenet_label, sample_image, sample_images
from .dream import deepdream, deepdream_step, invert_features, octave_sizes
from .evaluation import cascading_randomization, deletion_curve, evaluation_table, rank_correlation
from .explorer import explore
from .fast_style import (
    HELD_OUT_PHOTOS,
    ConditionalInstanceNorm,
    TransformerNet,
    instance_norm,
    load_fast_style,
    stylize,
)
from .fast_style_training import train_fast_style, training_photos
from .feature_viz import layer_tour, mean_pairwise_cosine, multifaceted_visualization
from .hooks import capture_activations, extract_features, layer_names
from .image import load_image
from .image_stats import (
    border_detail_ratio,
    chroma_high_frequency_share,
    class_ranks,
    clipped_share,
    gray,
    high_frequency_share,
    milky_share,
    photo_statistics,
    streak_share,
    tone_statistics,
    vivid_chroma,
)
from .labeled_images import load_labeled_images
from .layer_maps import activation_maps, show_activation_maps, show_filter_channels, zero_channel_share
from .losses import content_loss, gram_matrix, style_loss, tv_loss
from .models import STYLE_LAYERS, load_model
from .neighbours import (
    compute_features,
    embed_2d,
    gallery_with_copies,
    knn_accuracy,
    nearest_neighbours,
    place_randomly,
    random_crops,
)
from .optimize import optimize_image
from .path_similarity import class_path_similarity, path_similarity_controls, plot_path_similarity
from .receptive_fields import receptive_field
from .regularizers import L2Penalty
from .runtime import budget, get_device, seed_everything
from .saliency import gradient_image, guided_backprop, occlusion_map, occlusion_windows, saliency_map
from .segmentation import grabcut_from_saliency
from .small_cnn import SmallCNN, classifier_accuracy, filter_images, filter_smoothness, train_classifier
from .style import (
    mix_styles,
    normalized_layer_weights,
    style_distance,
    style_targets,
    style_transfer,
    synthesize_texture,
)
from .style_catalog import load_style, style_images
from .style_strength import match_channel_statistics, relative_style_distance
from .texture import copy_fraction, efros_leung, load_texture
from .unet import load_unet, mask_iou, predict_masks, synthetic_shapes
from .upsampling import load_decoder_net, power_profile, stride_energy
from .viz import plot_embedding, show_filters, show_image_rows, show_images, show_maps, show_thumbnails

__version__ = "0.1.0"

__all__ = [
    # setup: device, seeds, budget, models, photos and labels
    "budget", "get_device", "seed_everything",
    "load_model", "imagenet_index", "imagenet_label", "sample_image", "sample_images", "load_image",
    "capture_activations", "extract_features", "layer_names",
    # 01: filters, neighbors, embeddings, receptive fields, activating patches
    "SmallCNN", "classifier_accuracy", "filter_images", "filter_smoothness", "train_classifier",
    "load_labeled_images",
    "compute_features", "embed_2d", "gallery_with_copies", "knn_accuracy", "nearest_neighbours",
    "place_randomly", "random_crops",
    "receptive_field", "crop_patches", "top_activations",
    "activation_maps", "show_activation_maps", "show_filter_channels", "zero_channel_share",
    # 02: which pixels matter
    "saliency_map", "occlusion_map", "occlusion_windows", "guided_backprop", "gradient_image",
    "cascading_randomization", "deletion_curve", "rank_correlation", "grabcut_from_saliency",
    "class_activation_map", "grad_cam", "guided_grad_cam", "integrated_gradients", "smooth_grad",
    "evaluation_table", "bias_experiment",
    # 03: class visualization and adversarial images
    "objectives",
    "class_visualization", "class_visualization_step", "class_ranks", "stretch_contrast",
    "optimize_image", "L2Penalty",
    "chroma_high_frequency_share", "clipped_share", "high_frequency_share", "photo_statistics", "milky_share",
    "vivid_chroma", "streak_share", "gray",
    "class_path_similarity", "path_similarity_controls", "plot_path_similarity",
    "multifaceted_visualization", "mean_pairwise_cosine", "layer_tour",
    "fooling_step", "fooling_image", "fgsm", "pgd", "difference_image", "reload_as_png",
    # 04: DeepDream and feature inversion
    "deepdream", "deepdream_step", "octave_sizes", "invert_features",
    # 05: texture synthesis and style transfer
    "content_loss", "gram_matrix", "style_loss", "tv_loss",
    "STYLE_LAYERS", "load_style", "style_images", "style_targets",
    "mix_styles", "style_distance", "style_transfer", "synthesize_texture", "normalized_layer_weights",
    "tone_statistics", "border_detail_ratio",
    "copy_fraction", "efros_leung", "load_texture",
    # 06: fast style transfer
    "HELD_OUT_PHOTOS", "ConditionalInstanceNorm", "TransformerNet", "instance_norm", "load_fast_style",
    "stylize", "train_fast_style", "training_photos",
    "load_decoder_net", "power_profile", "stride_energy",
    "load_unet", "mask_iou", "predict_masks", "synthetic_shapes",
    "load_stylizer", "transformed_image_loss",
    "match_channel_statistics", "relative_style_distance",
    # plots
    "plot_embedding", "show_filters", "show_image_rows", "show_images", "show_maps",
    "show_thumbnails",
    # exercises
    "check_exercise", "rel_error",
    # lectures: the live explorer
    "explore",
]
