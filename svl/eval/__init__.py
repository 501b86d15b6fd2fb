"""Evaluation: zero-shot metrics, generalized zero-shot with calibrated stacking, reports.

Only numpy is imported here; matplotlib loads when a plot is written.
"""

from .zeroshot import (
    TEXT_MODES,
    choose_calibration,
    class_descriptions,
    class_mean_accuracy,
    class_texts,
    confusion_matrix,
    format_table,
    gzsl_metrics,
    per_class_accuracy,
    plot_confusion,
    topk_accuracy,
    write_report,
    zeroshot_report,
)

__all__ = [
    "TEXT_MODES",
    "choose_calibration",
    "class_descriptions",
    "class_mean_accuracy",
    "class_texts",
    "confusion_matrix",
    "format_table",
    "gzsl_metrics",
    "per_class_accuracy",
    "plot_confusion",
    "topk_accuracy",
    "write_report",
    "zeroshot_report",
]
