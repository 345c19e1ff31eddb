"""The kernel registry that ``scripts/compile_ptx.py`` compiles to PTX.

The script itself needs numba-cuda's compiler (``numba-cuda[cu13]``) and runs
as its own CI step (``.ci/run``); these tests check, with the simulator or a
GPU, that the registry it reads is complete and well formed.
"""

import inspect

from numba import types

from fgn_arrays.kernels import cuda


def module_kernels():
    """``{name: Python function}`` of the kernels (not device functions) defined at module level of kernels.cuda."""
    found = {}
    for name, obj in vars(cuda).items():
        if hasattr(obj, "targetoptions"):  # numba-cuda's dispatcher (a GPU is present)
            if not obj.targetoptions.get("device"):
                found[name] = obj.py_func
        elif hasattr(obj, "_device") and hasattr(obj, "fn"):  # the CUDA simulator's
            if not obj._device:
                found[name] = obj.fn
    return found


def test_every_module_level_kernel_is_registered():
    kernels = module_kernels()
    registered = {function for _, function, _ in cuda.ptx_specialisations()}
    assert len(kernels) >= 5  # margin, row_dot, softmax_cov, subspace, activation
    assert sorted(name for name, function in kernels.items() if function not in registered) == []


def test_each_specialisation_types_every_argument():
    for name, function, argtypes in cuda.ptx_specialisations():
        assert len(argtypes) == len(inspect.signature(function).parameters), name
        assert all(isinstance(t, types.Type) for t in argtypes), name


def test_each_row_kernel_is_registered_for_float32_and_float64():
    dtypes = {}
    for name, _, argtypes in cuda.ptx_specialisations():
        dtypes.setdefault(name, set()).add(str(argtypes[0].dtype))
    for name in ["_margin_kernel", "_row_dot_kernel", "_softmax_cov_kernel", "_subspace_kernel", "_activation_kernel"]:
        assert dtypes[name] == {"float32", "float64"}, name
