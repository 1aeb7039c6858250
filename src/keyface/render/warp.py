"""Training-free renderer: a dense piecewise-affine backward warp of the reference frame.

Control points are the face keypoints plus two rings around the head (hair, ears, neck) that
follow a share of the head's 2-D similarity motion (:func:`follow_share`), and fixed points on
the crop border (the background and shoulders are held still). The points are triangulated in
the *driving* frame (Delaunay, so the output has no holes or overlaps), each triangle maps
affinely to the same triangle in the reference, and the reference is sampled there. Outside the
face oval the mesh gives way to a smooth flow that follows the head less with the distance from
it (:func:`head_follow_flow`). The flow is computed on a half-resolution grid and upsampled;
sampling is bicubic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.spatial import Delaunay

from keyface.facemesh import (
    FACE_OVAL,
    INNER_LIPS,
    INNER_MOUTH_CORNERS,
    NUM_POINTS,
    OUTER_LIP_MIDDLE,
)
from keyface.motion.field import body_weight, upsample_field
from keyface.types import check_image


@dataclass
class Reference:
    """A decoded reference frame prepared for rendering."""

    image: np.ndarray
    keypoints: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)
    """Renderer-specific precomputed data (features of a learned generator, ...)."""


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity matrix ``M`` minimising ``|dst - M @ [src, 1]|^2`` (2-D points).

    Source points that all coincide have no rotation or scale to fit: the translation alone
    is returned (the decoder refuses such keypoints first; this keeps other callers safe)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - ms, dst - md
    var = float((sc**2).sum())
    if not var > 1e-12:
        return np.hstack([np.eye(2), (md - ms)[:, None]])
    a = float((sc * dc).sum()) / var
    b = float((sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum()) / var
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


HEAD_REACH = 0.25
"""How far outside the face oval the picture follows the head, as a share of the oval's mean
radius: the share of the head's motion falls as ``exp(-(d / (HEAD_REACH * R))^2 / 2)`` with
the distance ``d`` from the oval (:func:`follow_share`). Hair near the face moves with the
head, the background a head's width away stays still (issue 18: "no rippling backgrounds")."""
NECK_FOLLOW = 0.35
"""Share of the head motion followed below the chin (the neck, shoulders)."""
NECK_RAMP = 0.15
"""Below the chin the share falls to :data:`NECK_FOLLOW` over this share of the oval's radius."""
BLEND_REACH = 0.3
"""The mesh's flow gives way to the smooth head-follow flow (:func:`head_follow_flow`)
between the face oval and this share of the oval's radius outside it (the first ring)."""
BORDER_POINTS = 9
BORDER_CALM = 0.12
"""Points closer to the crop border than this share of the side move proportionally less."""


FOLD_GUARD = 1.7
"""The Gaussian's width and the neck's ramp are at least this many times the head's largest
displacement (:func:`follow_share`'s ``motion``): the share's slope times the displacement
stays under 0.4, so the picture around a head that moves far from its reference stretches
instead of folding over itself (a fold shows hair twice, with notches: seen on lp_d12 with a
fixed width of a quarter radius)."""


def follow_share(
    distance: np.ndarray,
    y: np.ndarray,
    margin: np.ndarray,
    radius: float,
    chin_y: float,
    side: float,
    motion: float = 0.0,
) -> np.ndarray:
    """The share of the head's motion a point outside the face follows: ``distance`` from the
    face oval, its ``y``, its ``margin`` to the crop border (arrays of one shape), for an oval
    of mean ``radius`` whose lowest point is at ``chin_y``, in a crop of shorter ``side``,
    the head's similarity moving the oval by at most ``motion`` pixels.

    A Gaussian of the distance (width :data:`HEAD_REACH` radii), lowered to
    :data:`NECK_FOLLOW` below the chin over :data:`NECK_RAMP` radii and to 0 at the crop border
    over :data:`BORDER_CALM`: one smooth function, so that what lies around the head bends
    smoothly and still things stay still. Both widths grow to :data:`FOLD_GUARD` times
    ``motion`` where that is more, so the warp never folds. (The rings of fixed shares it
    replaces, 1.0 at 1.3x the oval and 0.7 at 1.75x, dragged the background a head's width
    away with the head, and the mesh's large triangles between them bent straight lines into
    kinks that moved from frame to frame: the ripples in the hair and the picture frame behind
    a speaker, ``benchmarks/ripple.py``.)"""
    reach = max(HEAD_REACH * radius, FOLD_GUARD * motion, 1e-6)
    ramp = max(NECK_RAMP * radius, FOLD_GUARD * motion, 1e-6)
    share = np.exp(-0.5 * (np.asarray(distance, dtype=np.float64) / reach) ** 2)
    neck = np.clip((np.asarray(y, dtype=np.float64) - chin_y) / ramp, 0.0, 1.0)
    share = share * (1.0 - (1.0 - NECK_FOLLOW) * neck)
    return share * np.clip(np.asarray(margin, dtype=np.float64) / (BORDER_CALM * side), 0.0, 1.0)


RINGS = (1.3, 1.75)
"""Radius factors (relative to the face oval, from its centre) of the control-point rings around
the head; they move by :func:`follow_share`."""


def _border(width: int, height: int) -> np.ndarray:
    xs = np.linspace(-0.5, width - 0.5, BORDER_POINTS)
    ys = np.linspace(-0.5, height - 0.5, BORDER_POINTS)
    x1, y1 = width - 0.5, height - 0.5
    pts = [(x, -0.5) for x in xs] + [(x, y1) for x in xs]
    pts += [(-0.5, y) for y in ys[1:-1]] + [(x1, y) for y in ys[1:-1]]
    return np.asarray(pts, dtype=np.float64)


def control_points(
    ref_kp: np.ndarray, drv_kp: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Matching control points ``(reference, driving)``: keypoints, head rings, crop border."""
    ref_kp = np.asarray(ref_kp, dtype=np.float64)
    drv_kp = np.asarray(drv_kp, dtype=np.float64)
    oval_ref = ref_kp[list(FACE_OVAL)]
    oval_drv = drv_kp[list(FACE_OVAL)]
    sim = similarity_fit(oval_ref, oval_drv)
    centre = oval_ref.mean(axis=0)
    spoke = np.linalg.norm(oval_ref - centre, axis=1)
    radius = float(spoke.mean())
    chin_y = oval_ref[:, 1].max()
    motion = float(np.linalg.norm(oval_ref @ sim[:, :2].T + sim[:, 2] - oval_ref, axis=1).max())
    ring_ref, ring_drv = [], []
    size = np.array([width, height], dtype=np.float64)
    for factor in RINGS:
        pts = centre + factor * (oval_ref - centre)
        # Ring points outside the crop are dropped; near the border they move less, so the
        # border (background, shoulders) stays still.
        margin = np.minimum(pts, size - 1 - pts).min(axis=1)
        keep = margin > 2.0
        pts = pts[keep]
        moved = pts @ sim[:, :2].T + sim[:, 2]
        share = follow_share(
            (factor - 1.0) * spoke[keep],
            pts[:, 1],
            margin[keep],
            radius,
            chin_y,
            size.min(),
            motion,
        )
        ring_ref.append(pts)
        ring_drv.append(pts + share[:, None] * (moved - pts))
    border = _border(width, height)
    ref = np.concatenate([ref_kp, *ring_ref, border])
    drv = np.concatenate([drv_kp, *ring_drv, border])
    return ref, drv


FOLLOW_GRID = 4
"""The head-follow flow is computed on a grid this many times coarser and upsampled (it is
smooth); its blend starts one coarse cell outside the oval, so the face keeps the mesh's flow."""


def inside_oval(oval: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Whether each point of the grid ``xs`` (``(W,)``) x ``ys`` (``(H,)``) lies inside the
    closed polygon ``oval`` (``(M, 2)``, even-odd rule): ``(H, W)`` bool.

    Each edge that straddles a row (one end above it, the other at or below) crosses it at
    ``x = ax + (y - ay) (bx - ax) / (by - ay)``, and a point is inside where an odd number of
    crossings lie to its right. The browser decoder's warp rasterises the oval by the same rule
    in doubles (``static/decoder/warp.js``, ``headFollow``), so both sides see the same cells
    (``cv2.fillPoly`` has rasterisation rules of its own)."""
    a = np.asarray(oval, dtype=np.float64)
    b = np.roll(a, -1, axis=0)
    y = np.asarray(ys, dtype=np.float64)[:, None]  # (H, 1) against (M,) edges
    straddle = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    cross = np.where(straddle, cross, -np.inf)  # (H, M)
    right = cross[:, :, None] > np.asarray(xs, dtype=np.float64)[None, None, :]
    return (np.count_nonzero(right, axis=1) & 1).astype(bool)


def head_follow_flow(
    ref_kp: np.ndarray, drv_kp: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(flow, blend)``: the smooth backward flow around the head, ``(height, width, 2)``
    float32, and ``(height, width)`` float32 the weight with which it replaces the mesh's flow.

    Each output pixel ``x`` samples the reference at ``x + a(x) (S^-1 x - x)``, with ``S`` the
    similarity that carries the reference's face oval onto the driving one and ``a`` the
    :func:`follow_share` of ``x``'s distance from the driving oval. ``blend`` is 0 inside the
    oval and rises smoothly to 1 at :data:`BLEND_REACH` of its radius outside it, where the
    first ring of control points moves by the same rule: the two flows meet without a seam.
    Computed on a :data:`FOLLOW_GRID`-times coarser grid (the oval's cells by
    :func:`inside_oval`, their exact Euclidean distance by ``cv2.distanceTransform`` with
    ``DIST_MASK_PRECISE``) and upsampled bilinearly: about 0.5 ms at 256x256. The browser
    decoder's warp computes the same (``static/decoder/warp.js``, ``headFollow``)."""
    ref_kp = np.asarray(ref_kp, dtype=np.float64)
    drv_kp = np.asarray(drv_kp, dtype=np.float64)
    oval_ref = ref_kp[list(FACE_OVAL), :2]
    oval_drv = drv_kp[list(FACE_OVAL), :2]
    sim = similarity_fit(oval_drv, oval_ref)  # driving -> reference
    radius = float(np.linalg.norm(oval_drv - oval_drv.mean(axis=0), axis=1).mean())
    chin_y = float(oval_drv[:, 1].max())
    motion = float(np.linalg.norm(oval_drv @ sim[:, :2].T + sim[:, 2] - oval_drv, axis=1).max())
    q = FOLLOW_GRID
    qw, qh = (width + q - 1) // q, (height + q - 1) // q
    cx, cy = np.arange(qw) * q + (q - 1) / 2, np.arange(qh) * q + (q - 1) / 2
    outside = np.where(inside_oval(oval_drv, cx, cy), 0, 255).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = distance.astype(np.float64) * q
    xs, ys = np.meshgrid(cx, cy)
    margin = np.minimum(np.minimum(xs, width - 1 - xs), np.minimum(ys, height - 1 - ys))
    share = follow_share(distance, ys, margin, radius, chin_y, min(width, height), motion)
    tx = sim[0, 0] * xs + sim[0, 1] * ys + sim[0, 2]
    ty = sim[1, 0] * xs + sim[1, 1] * ys + sim[1, 2]
    shift = np.stack([share * (tx - xs), share * (ty - ys)], axis=-1).astype(np.float32)
    t = np.clip((distance - q) / max(BLEND_REACH * radius, 1e-6), 0.0, 1.0)
    blend = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    size = (qw * q, qh * q)
    shift = cv2.resize(shift, size, interpolation=cv2.INTER_LINEAR)[:height, :width]
    blend = cv2.resize(blend, size, interpolation=cv2.INTER_LINEAR)[:height, :width]
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return shift + np.stack([gx, gy], axis=-1), np.ascontiguousarray(blend)


def dense_flow(
    ref_pts: np.ndarray,
    drv_pts: np.ndarray,
    width: int,
    height: int,
    grid: int = 2,
    topology: np.ndarray | None = None,
) -> np.ndarray:
    """Backward flow ``(height, width, 2)`` float32: for each output pixel, where to sample the
    reference (x, y). Piecewise affine over a Delaunay triangulation of ``drv_pts`` (of
    ``topology``, the same points moved where the triangulation must not follow the driving
    frame: :func:`mouth_topology`), evaluated on a ``grid``-times coarser grid and upsampled
    bilinearly. With a ``topology``, triangles that are flat or turned over in the driving
    frame (the inside of a closed mouth) show nothing."""
    tri = Delaunay(drv_pts if topology is None else topology)
    nx, ny = (width + grid - 1) // grid, (height + grid - 1) // grid
    off = (grid - 1) / 2
    gx, gy = np.meshgrid(np.arange(nx) * grid + off, np.arange(ny) * grid + off)
    query = np.stack([gx.ravel(), gy.ravel()], axis=1)
    area = _doubled_areas(tri.simplices, drv_pts)
    usable = np.abs(area) > 1e-9
    if topology is not None and topology is not drv_pts:
        usable &= np.sign(area) == np.sign(_doubled_areas(tri.simplices, topology))
    # Each triangle's barycentric matrix and affine map from output (driving) to reference
    # pixels, solved once per triangle (1,100 small systems) instead of through qhull's
    # barycentric transform per pixel: the same piecewise-affine flow (to 1e-13 px) in 2 ms
    # instead of 6.5 ms.
    barycentric = _barycentric_matrices(tri.simplices, drv_pts, usable)
    if barycentric is None:  # a degenerate Delaunay triangle: qhull locates and maps every cell
        simplex = tri.find_simplex(query)
        inside = simplex >= 0
        s = np.where(inside, simplex, 0)
        trans = tri.transform[s]  # (P, 3, 2): barycentric (b0, b1) = T @ (x - r)
        dx = query[:, 0] - trans[:, 2, 0]
        dy = query[:, 1] - trans[:, 2, 1]
        b0 = trans[:, 0, 0] * dx + trans[:, 0, 1] * dy
        b1 = trans[:, 1, 0] * dx + trans[:, 1, 1] * dy
        b2 = 1.0 - b0 - b1
        verts = tri.simplices[s]  # (P, 3)
        p0, p1, p2 = ref_pts[verts[:, 0]], ref_pts[verts[:, 1]], ref_pts[verts[:, 2]]
        src = b0[:, None] * p0 + b1[:, None] * p1 + b2[:, None] * p2
        src = np.where(inside[:, None], src, query)
    else:
        affine = barycentric @ ref_pts[tri.simplices]  # (K, 3, 2)
        simplex = _owners(tri, drv_pts, query, barycentric, affine, usable, grid, (ny, nx))
        inside = simplex >= 0
        # Pixels outside every triangle keep their place: an extra identity map at the end.
        maps = np.concatenate([affine, [[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]])
        a = maps[np.where(inside, simplex, len(affine))]  # (P, 3, 2)
        src = query[:, :1] * a[:, 0] + query[:, 1:] * a[:, 1] + a[:, 2]
    flow = src.reshape(ny, nx, 2).astype(np.float32)
    if grid == 1:
        return flow
    # Upsample the coarse grid to every pixel (cell centres stay aligned).
    big = cv2.resize(flow, (nx * grid, ny * grid), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[:height, :width])


MOUTH_TOPOLOGY_GAP = 0.15
"""Inner-lip gap, as a share of the inner mouth's width, below which the triangulation is
made on a mouth opened to it (:func:`mouth_topology`)."""


def mouth_topology(points: np.ndarray) -> np.ndarray:
    """The control points to triangulate: ``points`` (the face-mesh keypoints first) with the
    inner lips of a closed or nearly closed mouth moved apart along the mouth's normal, to
    :data:`MOUTH_TOPOLOGY_GAP` of its width in the middle, tapering to nothing at the corners.

    Delaunay in the driving frame does not know what a lip is: where the inner lips meet, the
    upper and lower lip points lie on one line and the triangulation joins upper-lip points to
    the lower lip (and the reverse). Driven from a reference whose mouth is open, such a
    triangle spans the reference's open mouth, and the lower lip shows the dark inside as
    spikes hanging from the lip line (issue 18). Triangulated on an opened mouth, every lip
    triangle stays in its lip; the triangles between the inner lips are flat or turned over
    in the driving frame and show nothing (:func:`dense_flow`): the lips meet, as they do."""
    if len(points) < NUM_POINTS:
        return points
    c0, c1 = points[INNER_MOUTH_CORNERS[0]], points[INNER_MOUTH_CORNERS[1]]
    axis = c1 - c0
    width = float(np.hypot(*axis))
    if width < 1e-6:
        return points
    normal = np.array([-axis[1], axis[0]]) / width
    if float((points[OUTER_LIP_MIDDLE[1]] - points[OUTER_LIP_MIDDLE[0]]) @ normal) < 0:
        normal = -normal  # towards the lower lip
    upper = [u for u, _ in INNER_LIPS]
    lower = [v for _, v in INNER_LIPS]
    gap = (points[lower] - points[upper]) @ normal
    along = (((points[upper] + points[lower]) / 2 - c0) @ axis) / width**2
    target = MOUTH_TOPOLOGY_GAP * width * np.clip(4 * along * (1 - along), 0.0, 1.0)
    shift = np.maximum(target - gap, 0.0) / 2
    if not shift.any():
        return points
    out = np.array(points, dtype=np.float64, copy=True)
    out[upper] -= shift[:, None] * normal
    out[lower] += shift[:, None] * normal
    return out


FACE_FLOW_CACHE = "face_flow"
"""Key of :func:`face_flow`'s memo in :attr:`Reference.cache`."""


def face_flow(reference: Reference, keypoints: np.ndarray, grid: int = 2) -> np.ndarray:
    """The piecewise-affine face flow (:func:`control_points`, :func:`dense_flow`) of
    ``reference`` driven by ``keypoints``, without the body-motion field. Read-only.

    The flow of the last keypoints is kept in the reference's cache: the renderer computes it
    for every frame, and the full-frame composer (:func:`keyface.compose.full_frame.hold_motion`)
    needs the same flow for the same frame; with the memo it is computed once (about 15 ms a
    frame at 256x256 on this 2-core CPU, a third of the live full-frame server's budget).
    """
    height, width = reference.image.shape[:2]
    kp = np.ascontiguousarray(np.asarray(keypoints, dtype=np.float64)[:, :2])
    key = (kp.tobytes(), width, height, grid)
    cached = reference.cache.get(FACE_FLOW_CACHE)
    if cached is not None and cached[0] == key:
        return cached[1]
    ref_pts, drv_pts = control_points(reference.keypoints[:, :2], kp, width, height)
    flow = dense_flow(ref_pts, drv_pts, width, height, grid, topology=mouth_topology(drv_pts))
    around, blend = head_follow_flow(reference.keypoints[:, :2], kp, width, height)
    flow += blend[..., None] * (around - flow)
    flow.flags.writeable = False
    reference.cache[FACE_FLOW_CACHE] = (key, flow)
    return flow


OWNER_TOLERANCE = 1e-7
"""A grid cell belongs to a triangle whose barycentric coordinates there are all above
``-OWNER_TOLERANCE`` (a cell on a shared edge may go to either: both maps agree there)."""
OWNER_JUMP = 0.25
"""Cells of a triangle whose linear map differs from a neighbour's by more than this
(Frobenius norm) are checked to lie inside it (:func:`_owners`)."""
OWNER_WALK = 8
"""Steps of the walk from the rasterised owner to the true one before qhull is asked."""


def _owners(
    tri: Delaunay,
    drv_pts: np.ndarray,
    query: np.ndarray,
    barycentric: np.ndarray,
    affine: np.ndarray,
    usable: np.ndarray,
    grid: int,
    shape: tuple[int, int],
) -> np.ndarray:
    """The triangle that holds each query point (the grid cell centres), among the ``usable``
    ones (the others own nothing; -1: no triangle near the cell at all).

    OpenCV rasterises the triangle index of every cell (1/16 px precision), but it fills the
    cells a triangle's *edges* touch as well as those inside it, and a later triangle
    overwrites an earlier one there: about a fifth of the cells go to a neighbour of the
    triangle that holds them, whose map is then extrapolated by up to a cell. Between
    triangles whose maps are alike nothing shows (the maps agree along the shared edge). A
    sliver, though (the inner lips of a closed mouth, an eyelid in a blink: a driving triangle
    a fraction of a pixel high whose reference triangle is not), has a map that magnifies
    across it many times, and half a cell outside it lands pixels away in the reference: the
    dark and bright speckles along the lip line of decoded frames (issue 18,
    ``benchmarks/lips.py``). So the cells of every triangle whose linear map jumps by more
    than :data:`OWNER_JUMP` to a neighbour's (or that borders an unusable one) are checked
    by their barycentric coordinates, and those outside walk to the neighbour across the edge
    they lie beyond (one step almost always); the rare rest, and cells no triangle was
    rasterised on, take the triangle they are least outside of. Elsewhere a cell's flow is
    within ``OWNER_JUMP`` x a cell of the exact one (0.35 px at ``grid`` 2)."""
    off = (grid - 1) / 2
    owner = np.full(shape, -1, dtype=np.int32)
    corners = np.round((drv_pts - off) / grid * 16).astype(np.int32)
    polygons = corners[tri.simplices]  # (K, 3, 2), gathered once
    for k in np.flatnonzero(usable).tolist():
        cv2.fillConvexPoly(owner, polygons[k], k, cv2.LINE_8, 4)
    simplex = owner.ravel()
    linear = affine[:, :2, :].reshape(-1, 4)  # (K, 4): each triangle's linear part
    neighbours = tri.neighbors  # (K, 3), -1 at the hull
    step = linear[:, None, :] - linear[neighbours]
    jump = np.where(neighbours >= 0, (step * step).sum(axis=2), 0.0).max(axis=1)
    jump[~usable] = np.inf
    # A misplaced cell may lie in a triangle that shares only a corner with its owner: the
    # check covers every triangle at a corner of a jump.
    at_corner = np.zeros(len(drv_pts))
    np.maximum.at(at_corner, tri.simplices, jump[:, None])
    risky = np.append(at_corner[tri.simplices].max(axis=1) > OWNER_JUMP**2, False)
    todo = np.flatnonzero(risky[simplex])  # simplex -1 reads the appended False
    rows = [np.ascontiguousarray(barycentric[:, i]) for i in range(3)]  # (K, 3) each
    for _ in range(OWNER_WALK):
        k = simplex[todo]
        coords = query[todo, :1] * rows[0][k] + query[todo, 1:] * rows[1][k] + rows[2][k]
        beyond = coords.argmin(axis=1)
        outside = coords[np.arange(len(todo)), beyond] < -OWNER_TOLERANCE
        todo, beyond = todo[outside], beyond[outside]
        if not len(todo):
            break
        # Across the edge opposite the most negative coordinate; -1 there is the hull's edge.
        simplex[todo] = neighbours[simplex[todo], beyond]
        todo = todo[simplex[todo] >= 0]
    lost = simplex < 0  # cells no triangle was rasterised on, walks off the hull or too long
    lost[todo] = True
    candidates = np.flatnonzero(usable)
    for start in range(0, int(lost.sum()), 256):
        cells = np.flatnonzero(lost)[start : start + 256]
        coords = (
            query[cells, :1, None] * rows[0][candidates][None]
            + query[cells, 1:, None] * rows[1][candidates][None]
            + rows[2][candidates][None]
        ).min(axis=2)  # (cells, candidates): how far outside each triangle
        simplex[cells] = candidates[coords.argmax(axis=1)]
    return simplex


def _doubled_areas(simplices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(K,)``: twice the signed area of each triangle of ``points``."""
    p = points[simplices]
    a, b = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


NEVER_INSIDE = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
"""The barycentric matrix of a triangle that may hold no point (every coordinate -1)."""


def _barycentric_matrices(
    simplices: np.ndarray, drv_pts: np.ndarray, usable: np.ndarray | None = None
) -> np.ndarray | None:
    """``(K, 3, 3)``: for each triangle ``k`` the matrix ``B_k`` with ``[x, y, 1] @ B_k`` the
    barycentric coordinates of driving point ``(x, y)``; ``None`` if a triangle is degenerate
    (:data:`NEVER_INSIDE` for it instead where ``usable`` marks it as not to be used).

    ``B_k = S_k^-1`` with ``S_k`` the rows ``[x, y, 1]`` of the triangle's driving corners,
    inverted in closed form (cofactors over the determinant): 0.32 ms for 1,100 triangles
    instead of 0.56 ms through ``np.linalg.solve`` on one thread (2.9 ms where OpenBLAS
    spreads the small systems over two), and the same float32 flow on the 79 frames of
    ``lp_s18`` that ``benchmarks/full_frame_live.py`` renders (maps within 1.3e-7)."""
    x, y = drv_pts[simplices, 0], drv_pts[simplices, 1]  # (K, 3) each
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    y0, y1, y2 = y[:, 0], y[:, 1], y[:, 2]
    f0, f1, f2 = x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0
    adjugate = np.stack(
        [
            np.stack([y1 - y2, y2 - y0, y0 - y1], axis=1),
            np.stack([x2 - x1, x0 - x2, x1 - x0], axis=1),
            np.stack([f0, f1, f2], axis=1),
        ],
        axis=1,
    )  # (K, 3, 3): the adjugate of S_k
    det = f0 + f1 + f2
    if usable is not None:
        det = np.where(usable, det, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = adjugate / det[:, None, None]
    if usable is not None:
        inverse[~usable] = NEVER_INSIDE
    return inverse if np.isfinite(inverse).all() else None


def _triangle_maps(
    simplices: np.ndarray, drv_pts: np.ndarray, ref_pts: np.ndarray
) -> np.ndarray | None:
    """``(K, 3, 2)``: for each triangle ``k`` the affine map ``A_k = S_k^-1 R_k`` with
    ``[x, y, 1] @ A_k`` the reference point of driving point ``(x, y)``
    (:func:`_barycentric_matrices`); ``None`` if a triangle is degenerate."""
    barycentric = _barycentric_matrices(simplices, drv_pts)
    if barycentric is None:
        return None
    maps = barycentric @ ref_pts[simplices]
    return maps if np.isfinite(maps).all() else None


def warp_image(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``flow`` (bicubic, edge pixels repeated outside).

    Bicubic rather than bilinear: bilinear sampling at fractional positions is a small blur,
    and LPIPS sees it (bicubic: -2.2% LPIPS-Alex on the validation clips, row
    ``warp_bilinear`` of ``benchmarks/generator_headroom.py``), for about 1.5 ms more per
    256x256 frame."""
    return cv2.remap(
        image, flow[..., 0], flow[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


class WarpRenderer:
    """The always-available renderer (``name = "warp"``): no network, no training."""

    name = "warp"

    def __init__(self, grid: int = 2) -> None:
        self.grid = grid

    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        check_image(image, "reference image")
        return Reference(image=image, keypoints=np.asarray(keypoints, dtype=np.float32))

    def flow(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        """Backward flow for driving ``keypoints``, plus the body-motion ``field`` (a
        ``(G, G, 2)`` grid in 256-crop pixels, :mod:`keyface.motion.field`) outside the face
        when given."""
        height, width = reference.image.shape[:2]
        flow = face_flow(reference, keypoints, self.grid)
        if field is not None:
            weight = body_weight(keypoints, width, height)[..., None]
            return flow + upsample_field(field, width, height) * weight
        return flow.copy()

    def render(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        return warp_image(reference.image, self.flow(reference, keypoints, field))
