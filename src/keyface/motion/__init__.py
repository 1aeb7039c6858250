"""Motion representations: what is measured per frame and how it is made compact."""

from __future__ import annotations

from typing import Literal, overload

from keyface.motion.base import (
    REFERENCE_SIZE,
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

DEFAULT_REPRESENTATION = "facemesh-pca"
"""The face-mesh model (what landmarks are analysed with)."""
FIELD_REPRESENTATION = "facemesh-pca-field"
"""The face-mesh model plus the body-motion grid (what the encoder writes by default)."""
REPRESENTATIONS = (DEFAULT_REPRESENTATION, FIELD_REPRESENTATION)


class UnknownRepresentationError(Exception):
    """A stream names a motion representation this build does not have."""


@overload
def get_representation(name: Literal["facemesh-pca"] = ...) -> FaceMeshPCA: ...
@overload
def get_representation(name: str) -> FaceMeshPCA | FaceMeshField: ...
def get_representation(name: str = DEFAULT_REPRESENTATION) -> FaceMeshPCA | FaceMeshField:
    """The registered representation ``name`` (models are loaded once)."""
    if name == "facemesh-pca":
        return default_facemesh_pca()
    if name == "facemesh-pca-field":
        return default_facemesh_field()
    raise UnknownRepresentationError(
        f"unknown motion representation {name!r} (available: {', '.join(REPRESENTATIONS)})"
    )


__all__ = [
    "DEFAULT_REPRESENTATION",
    "FIELD_GRID",
    "FIELD_REPRESENTATION",
    "REFERENCE_SIZE",
    "REPRESENTATIONS",
    "FaceMeshField",
    "FaceMeshPCA",
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
    "upsample_field",
]
