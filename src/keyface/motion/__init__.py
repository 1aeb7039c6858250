"""Motion representations: what is measured per frame and how it is made compact."""

from __future__ import annotations

from typing import Literal, overload

from keyface.motion.base import (
    REFERENCE_SIZE,
    FaceState,
    FaceStateSource,
    FieldComponent,
    ImageMotionSource,
    MotionRepresentation,
    MotionStatistics,
    QuantLevel,
)
from keyface.motion.distance import MotionDistance, face_regions, motion_distance
from keyface.motion.facemesh_pca import FaceMeshPCA, default_facemesh_pca
from keyface.motion.field import (
    FIELD_GRID,
    FaceMeshField,
    body_weight,
    default_facemesh_field,
    estimate_field,
    upsample_field,
)
from keyface.registry import Registry

DEFAULT_REPRESENTATION = "facemesh-pca"
"""The face-mesh model (what landmarks are analysed with)."""
FIELD_REPRESENTATION = "facemesh-pca-field"
"""The face-mesh model plus the body-motion grid (what the encoder writes by default)."""


class UnknownRepresentationError(Exception):
    """A stream names a motion representation this build does not have."""


REPRESENTATIONS: Registry[MotionRepresentation] = Registry(
    "motion representation", error=UnknownRepresentationError
)
"""Every motion representation by the name streams store (models load on first use). A new
representation is its own module implementing :class:`MotionRepresentation` plus one
``REPRESENTATIONS.register`` here."""


@REPRESENTATIONS.register(
    DEFAULT_REPRESENTATION, summary="face-mesh pose + PCA expression (docs/motion.md)"
)
def _facemesh_pca() -> MotionRepresentation:
    return default_facemesh_pca()


@REPRESENTATIONS.register(
    FIELD_REPRESENTATION, summary="face mesh + body-motion grid (hair, shoulders, background)"
)
def _facemesh_field() -> MotionRepresentation:
    return default_facemesh_field()


@overload
def get_representation(name: Literal["facemesh-pca"] = ...) -> FaceMeshPCA: ...
@overload
def get_representation(name: str) -> MotionRepresentation: ...
def get_representation(name: str = DEFAULT_REPRESENTATION) -> MotionRepresentation:
    """The registered representation ``name`` (models are loaded once)."""
    return REPRESENTATIONS.get(name)


def own_renderer(name: str) -> str | None:
    """The renderer that streams of representation ``name`` must be drawn with, when the
    representation brings its own (registered with ``renderer=RENDERER_NAME``, as ``fomm``
    does: its keypoints mean nothing to the face-mesh renderers); ``None`` for the face-mesh
    representations, which any face-mesh renderer draws (``--generator``), and for names
    this build does not know."""
    if name not in REPRESENTATIONS:
        return None
    value = REPRESENTATIONS.entry(name).extra.get("renderer")
    return None if value is None else str(value)


__all__ = [
    "DEFAULT_REPRESENTATION",
    "FIELD_GRID",
    "FIELD_REPRESENTATION",
    "REFERENCE_SIZE",
    "REPRESENTATIONS",
    "FaceMeshField",
    "FaceMeshPCA",
    "FaceState",
    "FaceStateSource",
    "FieldComponent",
    "ImageMotionSource",
    "MotionDistance",
    "MotionRepresentation",
    "MotionStatistics",
    "QuantLevel",
    "UnknownRepresentationError",
    "body_weight",
    "estimate_field",
    "face_regions",
    "get_representation",
    "motion_distance",
    "own_renderer",
    "upsample_field",
]
