"""Shared pieces of the experiments: dense curvature matrices, measured statistics, CSV files.

Conventions
-----------
Curvature matrices are the library's mean-scaled ``G_FGN``, ``G_GGN`` and
``G_dropped`` (no ``l2``, no damping), built densely in float64 from
:func:`fgn_arrays.fgn_matvec`, :func:`fgn_arrays.ggn_matvec` and
:func:`fgn_arrays.dropped_matvec` applied to the columns of the identity, so
that what is measured is what the library computes. Records are lists of
flat dicts (one CSV row each); floats are written with ``repr`` (all 17
digits), so a CSV read back gives the same numbers.
"""

from __future__ import annotations

import csv

import numpy

from ..curvature import dropped_matvec, fgn_matvec, ggn_matvec

__all__ = ["dense_curvatures", "q_entropy", "read_csv", "write_csv"]


def dense_curvatures(lin):
    """``(G_FGN, G_GGN, G_dropped)``, each float64 ``(P, P)``, column ``j`` = product with ``e_j``.

    ``lin`` must be a float64 NumPy linearization; the three are symmetrised
    (``(G + G^T) / 2``) only after the products, which leaves them exact up
    to the products' own rounding.
    """
    P = lin.n_params
    out = []
    for matvec in (fgn_matvec, ggn_matvec, dropped_matvec):
        G = numpy.empty((P, P))
        e = numpy.zeros(P)
        for j in range(P):
            e[j] = 1.0
            G[:, j] = matvec(lin, e)
            e[j] = 0.0
        out.append(0.5 * (G + G.T))
    return tuple(out)


def q_entropy(Q, y):
    """Mean entropy (nats) of the competitor distributions ``q_i`` (rows of ``Q (N, C)``, zero at the label).

    ``H(q_i) = -sum_{k != y_i} q_ik log q_ik``; it is ``log(C - 1)`` when the
    competitor mass is spread evenly and 0 when it sits on one class.
    """
    Q = numpy.asarray(Q, dtype=numpy.float64)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        terms = numpy.where(Q > 0, -Q * numpy.log(Q), 0.0)
    return float(numpy.mean(numpy.sum(terms, axis=1)))


def write_csv(path, records):
    """Write ``records`` (list of flat dicts with the same keys) to ``path``; returns ``path``."""
    if not records:
        raise ValueError("`records` is empty; nothing to write.")
    keys = list(records[0])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for record in records:
            writer.writerow([_cell(record[key]) for key in keys])
    return path


def _cell(value):
    if isinstance(value, (bool, numpy.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, numpy.floating)):
        return repr(float(value))
    return str(value)


def read_csv(path):
    """The records of a CSV file of :func:`write_csv`: numbers as float or int, booleans as bool."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{key: _parse(value) for key, value in row.items()} for row in rows]


def _parse(text):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
