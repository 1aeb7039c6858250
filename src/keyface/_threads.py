"""One BLAS thread: the codec's linear algebra is on small matrices (a Delaunay triangulation,
a few dozen motion parameters), where OpenBLAS's own threads (which spin while they wait) gain
nothing and collapse when the CPUs are busy. Measured on this 2-core machine with a training
job running: warping 20 frames took 182 s with the default OpenBLAS threads and 0.82 s with
one. Every ``keyface`` command, the server and the sender set the limit; a program that uses
the library can call :func:`limit_blas_threads` itself."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def limit_blas_threads(threads: int = 1) -> None:
    """Limit every BLAS library loaded so far (numpy's and scipy's OpenBLAS) to ``threads``.

    Process-wide; the modules whose BLAS the codec uses are imported first so that their
    libraries are loaded when the limit is set. A no-op without ``threadpoolctl``."""
    try:
        import numpy  # noqa: F401
        import scipy.linalg
        import scipy.spatial  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        logger.debug("threadpoolctl missing: BLAS threads not limited")
        return
    threadpool_limits(limits=threads, user_api="blas")
