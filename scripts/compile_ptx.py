"""Compile every Numba CUDA kernel of ``fgn_arrays.kernels.cuda`` to PTX, without a GPU.

Usage (CI)::

    pip install 'numba-cuda[cu13]>=0.30.4,<0.31'
    python -W error scripts/compile_ptx.py [--cc 8.0 9.0]

Each kernel is compiled, with ``numba.cuda.compile_ptx``, for every
argument-type tuple the library launches it with
(``kernels.cuda.ptx_specialisations()``, see ``register_ptx`` there) and
every compute capability asked for (default 8.0 and 9.0). One line is printed
per kernel, specialisation and compute capability, then the count. The exit
status is non-zero when a kernel fails to compile or warns, when a kernel
defined at module level of ``kernels.cuda`` has no registry entry, or when
``NUMBA_ENABLE_CUDASIM`` is set (the simulator compiles nothing).

Notes
-----
numba-cuda 0.30 compiles the device functions a kernel calls for the
compute capability of the *current device*, which it asks the CUDA driver
for; without a GPU there is none. While compiling for ``cc``, this script
answers that question with ``cc`` (it replaces
``numba.cuda.dispatcher.get_current_device`` for the duration). A device
function is compiled once per process and argument types, so each compute
capability is compiled in a fresh process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
import types
import warnings

DEFAULT_CCS = ("8.0", "9.0")


def _parse_cc(text):
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _describe(argtypes):
    """``float32[:, ::1], int64[::1], int64`` for Numba's array and scalar types."""
    from numba import types as nbtypes

    def one(t):
        if isinstance(t, nbtypes.Array):
            dims = [":"] * t.ndim
            if t.layout == "C":
                dims[-1] = "::1"
            return f"{t.dtype}[{', '.join(dims)}]"
        return str(t)

    return ", ".join(one(t) for t in argtypes)


@contextlib.contextmanager
def _current_device_reports(cc):
    """While compiling, numba-cuda's "current device" is a stand-in with compute capability ``cc`` (see Notes)."""
    from numba.cuda import dispatcher

    if not hasattr(dispatcher, "get_current_device"):
        raise RuntimeError(
            "numba.cuda.dispatcher.get_current_device is gone: this numba-cuda compiles device "
            "functions another way; update scripts/compile_ptx.py."
        )
    original = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = original


def _unregistered(kernels, registered):
    """Names of the module-level kernels of ``kernels`` (not device functions) without a registry entry."""
    from numba.cuda.dispatcher import CUDADispatcher

    return sorted(
        name
        for name, obj in vars(kernels).items()
        if isinstance(obj, CUDADispatcher)
        and not obj.targetoptions.get("device")
        and obj.py_func not in registered
    )


def compile_one_cc(cc):
    """Compile every registered specialisation for ``cc``; print a line each. Returns ``(compiled, failed)``."""
    # kernels.cuda first: it is what imports numba.cuda (with its narrow import-time filter).
    from fgn_arrays.kernels import cuda as kernels
    from numba import cuda
    from numba.core import config

    if config.ENABLE_CUDASIM:
        print("NUMBA_ENABLE_CUDASIM is set: the CUDA simulator compiles nothing.", file=sys.stderr)
        return 0, 1
    entries = kernels.ptx_specialisations()
    sm = f"sm_{cc[0]}{cc[1]}"
    failed = 0
    missing = _unregistered(kernels, {function for _, function, _ in entries})
    for name in missing:
        print(f"FAIL  {sm}  {name}: a kernel of kernels.cuda without a registry entry (see register_ptx)")
        failed += 1
    compiled = 0
    with _current_device_reports(cc):
        for name, function, argtypes in entries:
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    ptx, _ = cuda.compile_ptx(function, argtypes, cc=cc)
                    error = None
                except Exception as exc:  # report every kernel, then fail
                    error = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - start
            label = f"{sm}  {name}({_describe(argtypes)})"
            if error is None and not caught:
                compiled += 1
                print(f"ok    {label}  {len(ptx) / 1024:.0f} KiB  {seconds:.1f} s")
                continue
            failed += 1
            print(f"FAIL  {label}")
            for message in ([error] if error else []) + [f"{w.category.__name__}: {w.message}" for w in caught]:
                print("      " + str(message).replace("\n", "\n      "))
    print(f"{sm}: {compiled} compiled, {failed} failed", flush=True)
    return compiled, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", nargs="+", default=list(DEFAULT_CCS), help="compute capabilities, e.g. 8.0 9.0")
    parser.add_argument("--one-cc", help=argparse.SUPPRESS)  # a child process: one compute capability
    args = parser.parse_args(argv)
    if args.one_cc:
        _, failed = compile_one_cc(_parse_cc(args.one_cc))
        return 1 if failed else 0
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("NUMBA_ENABLE_CUDASIM is set: unset it to compile PTX.", file=sys.stderr)
        return 2
    start = time.perf_counter()
    total, status = 0, 0
    for cc in args.cc:
        # The same interpreter and warning options (-W error), one process per compute capability.
        command = [sys.executable, *(f"-W{option}" for option in sys.warnoptions), __file__, "--one-cc", cc]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(child.stdout)
        status |= child.returncode
        # the child's last line: "sm_80: 10 compiled, 0 failed"
        counts = re.search(r": (\d+) compiled, \d+ failed\s*$", child.stdout)
        total += int(counts.group(1)) if counts else 0
    seconds = time.perf_counter() - start
    print(f"PTX: {total} kernel specialisations compiled for {', '.join(args.cc)} in {seconds:.0f} s")
    if status:
        print("PTX: some kernels failed to compile or warned (see above).", file=sys.stderr)
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
