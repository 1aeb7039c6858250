"""Video input and output (PyAV)."""

from keyface.io.video import VideoError, VideoWriter, probe, read_frames, read_video

__all__ = ["VideoError", "VideoWriter", "probe", "read_frames", "read_video"]
