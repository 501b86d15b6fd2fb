"""TensorBoard scalars written in the caller's thread, so a full disk is one error naming the file.

torch's `SummaryWriter` writes from a background thread: a full disk there prints a thread traceback
and surfaces later as a raw OSError. `ScalarLog` writes the same event file format (TFRecord
framing of `Event` protos, `simple_value` scalars, TensorBoard's purge marker on resume) with
`append_file`, so an append that fails raises `DiskFullError` and leaves the file as it was.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from svl.utils import append_file

__all__ = ["ScalarLog"]

_UID = itertools.count()


class ScalarLog:
    """One TensorBoard event file in `log_dir`; `add(values, step)` appends the scalars of one step.

    `purge_step` (on resume: the first step not in the checkpoint) tells TensorBoard to drop what
    earlier files logged from that step on, as `SummaryWriter(purge_step=...)` does.
    """

    def __init__(self, log_dir: str | os.PathLike[str], purge_step: int | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a folder's event files in name order: this one must sort after the
        # earlier runs' files (a resume within the same second included).
        seconds = int(time.time())
        for f in self.dir.glob("events.out.tfevents.*"):
            m = re.match(r"events\.out\.tfevents\.(\d+)\.", f.name)
            if m:
                seconds = max(seconds, int(m.group(1)) + 1)
        stamp = f"{seconds:010d}.{socket.gethostname()}.{os.getpid()}.{next(_UID)}"
        self.path = self.dir / f"events.out.tfevents.{stamp}"
        events = [Event(wall_time=time.time(), file_version="brain.Event:2")]
        if purge_step is not None:
            events.append(Event(step=purge_step, file_version="brain.Event:2"))
            events.append(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))
        self._append(events)

    def add(self, values: Mapping[str, float], step: int) -> None:
        """The scalars of one step (one event); nothing is written for an empty mapping."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        if not values:
            return
        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self._append([Event(wall_time=time.time(), step=int(step), summary=summary)])

    def _append(self, events: list[Any]) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        buf = io.BytesIO()
        writer = RecordWriter(buf)
        for event in events:
            writer.write(event.SerializeToString())
        append_file(self.path, buf.getvalue())
