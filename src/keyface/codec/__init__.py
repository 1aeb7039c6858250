"""The codec core: encoder and decoder state machines (sans-I/O), settings, rate control.

encoder = EncoderCore(CodecConfig(), fps)          # frames + landmarks in ...
packets = encoder.encode(crop, landmarks) ...       # ... packets out
decoder = DecoderCore(encoder.header)               # packets in ...
frames = decoder.receive(packet) ...                # ... frames out
"""

from keyface.codec.config import DEFAULT_THRESHOLDS, CodecConfig, ReferenceBuffer
from keyface.codec.decoder import DecodedFrame, DecoderCore
from keyface.codec.encoder import EncoderCore, EncoderStats, FrameDecision

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CodecConfig",
    "DecodedFrame",
    "DecoderCore",
    "EncoderCore",
    "EncoderStats",
    "FrameDecision",
    "ReferenceBuffer",
]
