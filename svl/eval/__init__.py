"""Metrics, and only metrics: zero-shot / GZSL accuracy with calibrated stacking and its reports
(zeroshot.py), segmentation mIoU (segmentation.py), KITTI detection AP (detection.py), retrieval
Recall@N (retrieval.py). They take predictions and labels; running a model is `svl.infer`'s job.

Only numpy (and the cheap svl.plots, svl.vocab, svl.utils) is imported here; matplotlib loads when used.
"""

from svl.eval.zeroshot import (
    choose_calibration,
    class_mean_accuracy,
    confusion_matrix,
    format_table,
    gzsl_metrics,
    per_class_accuracy,
    topk_accuracy,
    write_report,
    zeroshot_report,
)

__all__ = [
    "choose_calibration",
    "class_mean_accuracy",
    "confusion_matrix",
    "format_table",
    "gzsl_metrics",
    "per_class_accuracy",
    "topk_accuracy",
    "write_report",
    "zeroshot_report",
]
