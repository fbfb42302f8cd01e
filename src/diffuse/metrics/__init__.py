"""Sample-quality metrics: Frechet distance, KID and class accuracy in the features of the
project's own per-dataset classifiers, measured against each dataset's held-out split."""

from diffuse.metrics.classifier import (
    CLASSIFIER_DATASETS,
    Classifier,
    ClassifierConfig,
    load_classifier,
    save_classifier,
)
from diffuse.metrics.evaluate import (
    HELDOUT_SEED,
    HELDOUT_SIZE,
    DatasetSplit,
    EvalResult,
    classifier_outputs,
    evaluate_images,
    heldout_indices,
    load_split,
)
from diffuse.metrics.frechet import (
    FeatureStats,
    RunningStats,
    feature_stats,
    frechet_distance,
    frechet_from_features,
)
from diffuse.metrics.kid import KIDResult, kid, mmd2_unbiased

__all__ = [
    "CLASSIFIER_DATASETS",
    "HELDOUT_SEED",
    "HELDOUT_SIZE",
    "Classifier",
    "ClassifierConfig",
    "DatasetSplit",
    "EvalResult",
    "FeatureStats",
    "KIDResult",
    "RunningStats",
    "classifier_outputs",
    "evaluate_images",
    "feature_stats",
    "frechet_distance",
    "frechet_from_features",
    "heldout_indices",
    "kid",
    "load_classifier",
    "load_split",
    "mmd2_unbiased",
    "save_classifier",
]
