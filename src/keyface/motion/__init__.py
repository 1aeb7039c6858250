"""Motion representations: what is measured per frame and how it is made compact."""

from __future__ import annotations

from keyface.motion.base import (
    REFERENCE_SIZE,
    MotionRepresentation,
    MotionStatistics,
    QuantLevel,
)
from keyface.motion.distance import MotionDistance, face_regions, motion_distance
from keyface.motion.facemesh_pca import FaceMeshPCA, default_facemesh_pca

DEFAULT_REPRESENTATION = "facemesh-pca"


class UnknownRepresentationError(Exception):
    """A stream names a motion representation this build does not have."""


def get_representation(name: str = DEFAULT_REPRESENTATION) -> FaceMeshPCA:
    """The registered representation ``name`` (models are loaded once)."""
    if name == "facemesh-pca":
        return default_facemesh_pca()
    raise UnknownRepresentationError(
        f"unknown motion representation {name!r} (available: {DEFAULT_REPRESENTATION})"
    )


__all__ = [
    "DEFAULT_REPRESENTATION",
    "REFERENCE_SIZE",
    "FaceMeshPCA",
    "MotionDistance",
    "MotionRepresentation",
    "MotionStatistics",
    "QuantLevel",
    "UnknownRepresentationError",
    "face_regions",
    "get_representation",
    "motion_distance",
]
