"""The paper's experiments, reproduced: the decomposition, the mechanism sweeps and the head evaluation.

Library code: each experiment returns records (lists of flat dicts, one CSV
row each) and needs neither matplotlib nor a GPU. The command
``fgn-arrays experiments {decomposition,mechanism,head} [--quick] --out DIR``
(:mod:`fgn_arrays.experiments._cli`) writes them as CSV files, and as PNG
figures when matplotlib is installed. ``docs/reproducing.md`` states every
setup choice and shows the results.

``decomposition``
    ``G_GGN = G_FGN + G_dropped`` checked densely in float64: residual,
    smallest eigenvalues, ``G_dropped = 0`` for two classes.
``mechanism``
    The FGN step against the full GGN step over competitor concentration and
    damping, with the step-gap bound of ``docs/derivation.md``.
``head``
    Training a fixed-feature head on the WordNet features by plain FGN, the
    default method, full-GGN CG steps, L-BFGS, Adam, SGD with momentum and
    scikit-learn.
"""

from . import decomposition, head, mechanism
from ._common import read_csv, write_csv

__all__ = ["decomposition", "head", "mechanism", "read_csv", "write_csv"]
