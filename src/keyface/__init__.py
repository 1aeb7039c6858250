"""keyface: a generative talking-head video codec for ultra-low bitrate video conferencing."""

from keyface.threads import current_policy as _current_policy

__version__ = "0.1.0"

# The thread policy goes into the environment before torch, onnxruntime, OpenCV or a BLAS
# library loads, so that their pools start the right size (keyface.threads, docs/threads.md).
_current_policy()
