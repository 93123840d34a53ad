"""How ``sample_cosines`` stores a sample's cosines: each cell of a matrix once, bit for bit.

Why a module of its own: the layout is the one part of the schema that every cosine reader and
writer must agree on, and it is SQL, not a table: the writer packs with
:func:`packed_cosines_query`, the upgrade to version 6 (:mod:`.migrations`) packs the rows
version 4 stored with the same query, and readers unpack with :data:`UNPACKED_COSINES` (or read
one cell where it is stored, :func:`cosine_cell`), so an upgraded file holds exactly the rows
the writer would have written and nothing above the storage layer sees the layout.

The layout (schema version 6): ``sample_cosines(run_no, sample_index, kind, name, layers
SMALLINT[], cells REAL[], diagonal REAL[], lower REAL[])``. A pair's ``cells`` are its cosines,
one per listed layer. A matrix of n layers keeps in ``cells`` the n(n-1)/2 cells above its
diagonal, row by row (``[0][1..n-1]``, ``[1][2..n-1]``, ...); ``diagonal`` is NULL when every
diagonal cell is 1.0, else the n diagonal cells; ``lower`` is NULL when every cell below the
diagonal equals its mirror above, else the cells below in the order of their mirrors
(``lower[k]`` is ``[j][i]`` where ``cells[k]`` is ``[i][j]``). Why: a cosine matrix is symmetric
with a unit diagonal, so half of each row-major matrix repeated the other half, and these rows
were two thirds of the bytes a run uses: for the 4 attention projections of a 30-layer model,
15 KB of the 22 KB a sample used (benchmarks/bench_cache.py's write side, random cells as
incompressible as real ones). Stored once they take 7.5 KB, the floor for float32 values
(4 x 435 + 2 x 30 of them).

Why lossless instead of symmetric by definition: a matrix reads back bit for bit as written, and
what is written is not always symmetric bit for bit. The engine's formed and batch-end routes take
the Gram from a BLAS product that may add (i, j) and (j, i) in different orders (MKL on a CPU left
about half the mirror cells a float32 step apart at 5 to 7 layers, none at 2 to 4 or 8 to 80; the
factor route fills both halves from one product), an imported file holds whatever its writer
wrote, and a zero gradient puts NaN on its diagonal. Such a matrix keeps ``lower`` or
``diagonal`` (with both, the n^2 values version 4 kept, no more); the engine's usual matrix,
symmetric with its diagonal exactly 1.0 once rounded to float32 (x / (sqrt(x) sqrt(x)) is within
2^-52 of 1), costs two NULLs. "Equal" is bit equality: 0.0 and -0.0 differ, and NaN equals NaN
(every undefined cosine is stored as the one NaN the writer makes of it). The diagonal is kept
apart from ``cells`` because it is almost always all ones: inside them it would cost n values per
matrix, 6% more at 30 layers. Lists in one row per matrix rather than a row per cell: a row per
cell would repeat the run, sample, kind, name and two layer numbers beside every 4-byte value.
"""

from __future__ import annotations

__all__ = ["UNPACKED_COSINES", "cosine_cell", "packed_cosines_query"]


def cosine_cell(row: str, column: str, size: str) -> str:
    """SQL for the (1-based) position in ``cells`` of a matrix's cell [row][column] above the
    diagonal (0-based, row < column) in a matrix of ``size`` layers: each an SQL expression."""
    return f"(({row}) * (2 * ({size}) - ({row}) - 1) // 2 + ({column}) - ({row}))"


# SQL: the number of layers n of a row's matrix, and its cell [i][j] in ``cosines`` (row-major;
# lists are 1-based).
_SIZE = "len(layers)"
_ROW_MAJOR = f"cosines[i * {_SIZE} + j + 1]"


def packed_cosines_query(source: str) -> str:
    """SELECT that stores the rows of ``source`` as ``sample_cosines`` holds them (see the
    module docs): ``source`` is a query giving ``run_no, sample_index, kind, name, layers`` and
    ``cosines``, a pair's cosines or a matrix row-major."""
    # Bit equality: = alone takes -0.0 for 0.0 (and NaN for NaN, which is meant).
    mirrored = "v = cells[k] AND signbit(v) = signbit(cells[k])"
    return f"""
        SELECT run_no, sample_index, kind, name, layers, cells,
               CASE WHEN NOT list_bool_and(list_transform(diagonal,
                                                          lambda d: d = 1 AND NOT signbit(d)))
                    THEN diagonal END AS diagonal,
               CASE WHEN NOT list_bool_and(list_transform(lower, lambda v, k: {mirrored}))
                    THEN lower END AS lower
        FROM (
            SELECT run_no, sample_index, kind, name, layers,
                   CASE WHEN kind = 'layers'
                        THEN flatten(list_transform(range({_SIZE}), lambda i:
                            list_transform(range(i + 1, {_SIZE}), lambda j: {_ROW_MAJOR})))
                        ELSE cosines END AS cells,
                   CASE WHEN kind = 'layers'
                        THEN list_transform(range({_SIZE}), lambda i:
                            cosines[i * {_SIZE} + i + 1]) END AS diagonal,
                   CASE WHEN kind = 'layers'
                        THEN flatten(list_transform(range({_SIZE}), lambda j:
                            list_transform(range(j + 1, {_SIZE}), lambda i: {_ROW_MAJOR})))
                        END AS lower
            FROM ({source})
        )
    """  # noqa: S608 (source is this package's constant SQL)


# SQL for a ``sample_cosines`` row's cosines as version 4 stored them: a pair's per layer, a
# matrix's row-major, rebuilt from ``cells``, ``diagonal`` and ``lower`` bit for bit.
UNPACKED_COSINES = f"""
    CASE WHEN kind = 'layers'
         THEN flatten(list_transform(range({_SIZE}), lambda i:
                  list_transform(range({_SIZE}), lambda j: CASE
                      WHEN i < j THEN cells[{cosine_cell("i", "j", _SIZE)}]
                      WHEN i = j THEN CASE WHEN diagonal IS NULL THEN 1::REAL
                                           ELSE diagonal[i + 1] END
                      WHEN lower IS NULL THEN cells[{cosine_cell("j", "i", _SIZE)}]
                      ELSE lower[{cosine_cell("j", "i", _SIZE)}] END)))
         ELSE cells END
"""
