"""The interface every motion representation implements.

A *motion representation* turns what is measured on a frame (face-mesh landmarks today, learned
keypoints + Jacobians later) into a short vector of real parameters, and turns parameters back
into the 2-D keypoints the renderer warps with. Parameters are expressed in units that do not
depend on the crop size: positions are in pixels of a 256x256 crop (``REFERENCE_SIZE``).

The entropy coder only sees the parameter vector and its quantisation steps, and the codec
only the methods of :class:`MotionRepresentation` (never the concrete class), so a new
representation is its own module plus one line in the registry (``keyface.motion``).

A representation may carry a *field component* (:class:`FieldComponent`): a coarse motion grid
for what its keypoints do not describe (hair, shoulders, background). The encoder measures it
against the warp of the chosen reference and the decoder hands it to the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

REFERENCE_SIZE = 256
"""Crop size in which positional parameters are expressed (pixels)."""


@dataclass(frozen=True)
class QuantLevel:
    """One operating point of a representation's quantiser."""

    num_params: int
    """How many leading parameters are coded (the rest are zero)."""
    steps: np.ndarray
    """``(num_params,)`` uniform quantiser step per parameter."""


@dataclass(frozen=True)
class MotionStatistics:
    """Priors for the entropy coder, in parameter units (fitted on training clips)."""

    mean: np.ndarray
    """``(D,)`` mean of each parameter (used to code a frame without prediction)."""
    spread: np.ndarray
    """``(D,)`` mean absolute deviation of each parameter around ``mean``."""
    delta_spread: np.ndarray
    """``(D,)`` mean absolute frame-to-frame change of each parameter."""


@runtime_checkable
class FieldComponent(Protocol):
    """The optional grid part of a representation's parameters (see ``keyface.motion.field``)."""

    field_grid: int
    """Side ``G`` of the ``(G, G, 2)`` grid, in 256-crop pixels per node."""

    def with_field(self, params: np.ndarray, field: np.ndarray) -> np.ndarray:
        """``params`` with the grid part replaced by the coefficients of ``field``."""
        ...

    def quantize_field(
        self, params: np.ndarray, steps: np.ndarray, previous: np.ndarray | None
    ) -> np.ndarray:
        """Quantised ``params`` (grid part with hysteresis against ``previous``, the last
        frame's quantised parameters)."""
        ...

    def field(self, params: np.ndarray) -> np.ndarray:
        """The ``(G, G, 2)`` grid that ``params`` carry."""
        ...


@dataclass(frozen=True)
class FaceState:
    """How open the mouth and the eyes are in one set of keypoints: what the encoder's content
    rule (:mod:`keyface.codec.content`) compares between a frame and its references."""

    mouth: float
    """Inner-lip gap over the inner mouth width (0 closed, about 0.5-0.8 wide open)."""
    eyes: tuple[float, float]
    """Eye aspect ratio of the right and the left eye (open about 0.2-0.35, a blink < 0.1)."""
    gaze: tuple[float, float] | None = None
    """Where each iris sits between its eye's corners (:func:`keyface.facemesh.gaze`: 0 outer
    corner, 1 inner, about 0.5 ahead); ``None``: keypoints without irises."""


@runtime_checkable
class FaceStateSource(Protocol):
    """Optional part of a representation whose keypoints name the mouth and the eyes (the face
    mesh does; learned keypoints need not). The encoder then refreshes and picks references by
    mouth and eye state, not by motion alone."""

    def face_state(self, keypoints: np.ndarray) -> FaceState:
        """The mouth and eye openness shown by ``keypoints`` (from :meth:`keypoints`)."""
        ...

    def detail_regions(self, keypoints: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        """Groups of ``keypoints`` around which a picture is worth coding better, by the part of
        :class:`FaceState` they show: ``"eyes"`` (one group per eye) and ``"mouth"``.
        :mod:`keyface.codec.detail` codes the rectangle around each group."""
        ...


@runtime_checkable
class ImageMotionSource(Protocol):
    """Optional part of a representation that measures motion on the picture itself (learned
    keypoints, FOMM) instead of on face-mesh landmarks. The encoder then takes every frame's
    parameters from :meth:`analyze_image`, whether the face mesh found a face or not."""

    def analyze_image(self, image: np.ndarray) -> np.ndarray:
        """Parameters ``(num_params,)`` float64 of an ``(S, S, 3)`` uint8 RGB crop."""
        ...


@runtime_checkable
class MotionRepresentation(Protocol):
    """Per-frame motion: measured on the encoder, rebuilt into keypoints on the decoder."""

    name: str
    """Registry key, stored in the bitstream header."""
    version: int
    """Bumped whenever a change would make old streams decode differently."""
    digest: int
    """CRC-32 of the model file (0 for a representation without one); checked at decode."""
    num_keypoints: int

    @property
    def num_params(self) -> int: ...

    @property
    def statistics(self) -> MotionStatistics: ...

    def quant_level(self, level: int) -> QuantLevel: ...

    @property
    def num_levels(self) -> int: ...

    def analyze(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        """Parameters ``(num_params,)`` float64 from landmarks measured on a ``size`` crop."""
        ...

    def keypoints(self, params: np.ndarray, size: int) -> np.ndarray:
        """``(num_keypoints, 2)`` float32 keypoints in pixels of a ``size x size`` crop."""
        ...

    def for_level(self, level: int) -> MotionRepresentation:
        """The representation as quantiser level ``level`` codes it (what the codec uses)."""
        ...

    def neutral(self) -> np.ndarray:
        """Parameters ``(num_params,)`` of the frames before any face is seen: the average
        face, centred in the crop."""
        ...

    def gate_distance(self, reference: np.ndarray, current: np.ndarray) -> float:
        """How far the keypoints ``current`` moved from ``reference`` (both from
        :meth:`keypoints`), in the units of ``RefreshMode.MOTION``'s threshold: the ZTE quality
        gate codes a keyframe when every reference is farther than the threshold."""
        ...

    @property
    def field_component(self) -> FieldComponent | None:
        """The grid part of the parameters, or ``None`` when the representation has none."""
        ...
