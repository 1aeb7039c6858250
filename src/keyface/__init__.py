"""keyface: a generative talking-head video codec for ultra-low bitrate video conferencing."""

__version__ = "0.1.0"
