"""Teacher soft labels: faiss kNN, calibration, augmentation (N+L rows), blending.

Importing this package loads only numpy and scipy; faiss is imported when a search runs.
"""

from lever_plugins.soft_labels.augment import SoftLabels, build_soft_labels
from lever_plugins.soft_labels.blend import blend
from lever_plugins.soft_labels.calibrate import calibrate
from lever_plugins.soft_labels.knn import knn_search
from lever_plugins.soft_labels.provider import KnnProvider

__all__ = ["KnnProvider", "SoftLabels", "blend", "build_soft_labels", "calibrate", "knn_search"]
