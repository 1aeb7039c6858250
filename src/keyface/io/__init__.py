"""Video input and output (PyAV), and safe output paths."""

from keyface.io.output import OutputError, atomic_output, check_output, write_bytes_atomic
from keyface.io.video import (
    VIDEO_OUTPUT_FORMATS,
    VIDEO_OUTPUT_SUFFIXES,
    VideoError,
    VideoWriter,
    probe,
    read_frames,
    read_video,
)

__all__ = [
    "VIDEO_OUTPUT_FORMATS",
    "VIDEO_OUTPUT_SUFFIXES",
    "OutputError",
    "VideoError",
    "VideoWriter",
    "atomic_output",
    "check_output",
    "probe",
    "read_frames",
    "read_video",
    "write_bytes_atomic",
]
