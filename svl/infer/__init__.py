"""Inference: a checkpoint (or a built model) over files or a dataset, for every modality and task.
What is predicted is scored by `svl.eval`, which never runs a model; the CLI's `classify`, `zeroshot`,
`segment`, `detect` and `retrieve` commands map their arguments onto these calls.

- classification.py: `classify` (point clouds, event recordings or images, as the checkpoint was
  trained), `predict_scores` (a dataset's score matrix)
- zeroshot.py: `evaluate_checkpoint` (checkpoint + Rep-VLI head over a split, scored), `read_class_list`
- segmentation.py: `segment` (files -> labelled .ply / .npy / .png), `predict_points` (a dataset),
  `predict_logits` / `cover` (every point scored in passes of the training budget)
- detection.py: `detect` (files -> boxes .json / .png), `predict_boxes` (a dataset), `postprocess`
- retrieval.py: `retrieve` (Recall@N on a place-recognition split), `image_descriptors`
- checks.py: each input against what the checkpoint was trained on (a warning line, or a refusal)
- transfer.py: `transfer_report` (what a pretrained encoder sees on a dataset vs its pretraining data:
  sites per stage, firing rates, BN input shift), `format_transfer`
- language.py: `caption` (one caption per file), `ChatSession` (questions about one file) with a
  language-bridge checkpoint
- files.py: many files in one call: `output_paths` (by the path below the files' common folder,
  never overwriting each other or an input), `each_file` (errors="report": a bad file becomes
  `{"file", "error"}` and the others go on)
Every checkpoint becomes a model through `svl.models.load_model` (by its kind), the one loading path.
"""

from svl.infer.classification import classify, encode, predict_scores, vote_probabilities
from svl.infer.detection import detect, postprocess, predict_boxes
from svl.infer.language import ChatSession, caption
from svl.infer.retrieval import image_descriptors, retrieve
from svl.infer.segmentation import chunk_input, cover, predict_logits, predict_points, segment
from svl.infer.transfer import format_transfer, transfer_report
from svl.infer.zeroshot import evaluate_checkpoint, read_class_list

__all__ = [
    "ChatSession",
    "caption",
    "chunk_input",
    "classify",
    "cover",
    "detect",
    "encode",
    "evaluate_checkpoint",
    "format_transfer",
    "image_descriptors",
    "postprocess",
    "predict_boxes",
    "predict_logits",
    "predict_points",
    "predict_scores",
    "read_class_list",
    "retrieve",
    "segment",
    "transfer_report",
    "vote_probabilities",
]
