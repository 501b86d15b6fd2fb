"""Evaluation: zero-shot metrics, generalized zero-shot with calibrated stacking, reports, and
running a checkpoint + Rep-VLI head over datasets and files (text-free).

Only numpy is imported here; torch, the data layer and matplotlib load when used.
"""

from svl.eval.zeroshot import (
    choose_calibration,
    class_mean_accuracy,
    confusion_matrix,
    evaluate_checkpoint,
    format_table,
    gzsl_metrics,
    per_class_accuracy,
    plot_confusion,
    topk_accuracy,
    write_report,
    zeroshot_report,
)

__all__ = [
    "choose_calibration",
    "class_mean_accuracy",
    "confusion_matrix",
    "evaluate_checkpoint",
    "format_table",
    "gzsl_metrics",
    "per_class_accuracy",
    "plot_confusion",
    "topk_accuracy",
    "write_report",
    "zeroshot_report",
]
