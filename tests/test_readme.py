"""README.md's Python blocks run, in order, in one namespace (as a reader would paste them).

The block that imports CuPy runs on CuPy where there is a GPU, and on the CPU
stand-in for CuPy (fgn_arrays.testing) elsewhere: the same lines, with ``cp``
bound to the stand-in's namespace.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import HAS_GPU

from fgn_arrays.testing import use_standin

README = Path(__file__).resolve().parent.parent / "README.md"
CUPY_IMPORT = "import cupy as cp\n"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_blocks_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) >= 5
    assert sum(CUPY_IMPORT in block for block in blocks) == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_readme_python_blocks_run():
    namespace = {"__name__": "readme"}
    for block in python_blocks():
        if CUPY_IMPORT in block and not HAS_GPU:
            with use_standin() as sx:
                exec(compile(block.replace(CUPY_IMPORT, ""), "README.md", "exec"), {**namespace, "cp": sx})
            continue
        exec(compile(block, "README.md", "exec"), namespace)
    # the numbers the README states
    lin2, head2, X, y = namespace["lin2"], namespace["head2"], namespace["X"], namespace["y"]
    assert round(lin2.loss, 2) == 3.21
    assert round(head2.linearize(namespace["theta2"], X, y).loss, 2) == 2.73
    assert namespace["res"].converged and np.allclose(namespace["res"].x, 1 / np.arange(1.0, 6.0))
    assert namespace["clf"].coef_.shape == (133, 384)
