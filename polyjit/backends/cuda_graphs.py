"""Whole jitted programs replayed as CUDA graphs, so a step of many small kernels pays one
launch instead of one per kernel.

The first call captures the program's launches on the backend's stream into a graph that
owns fixed buffers: the inputs are copied into fixed input buffers, every buffer the
program allocates during capture is kept alive with the graph (the graph holds its
address), and the outputs are copied out of the graph's buffers into fresh ones so that
the arrays a call returns are never overwritten by the next replay. Programs with host
steps (control flow, host fallbacks) or literal outputs, single-kernel programs, and programs
whose inputs and outputs exceed MAX_COPY_BYTES (the copies would cost more than launches
save) run as plain launches.
POLYJIT_CUDA_GRAPHS=0 turns graphs off.
"""
from __future__ import annotations

import os

from ..lowering.memory import nbytes
from ..tracer.core import Literal


MIN_KERNELS = 2
MAX_COPY_BYTES = 64 << 20


def graphs_enabled() -> bool:
    return os.environ.get("POLYJIT_CUDA_GRAPHS", "1") != "0"


class GraphExecutable:
    """Wraps a compiled.Executable: same call signature, same results."""

    def __init__(self, exe):
        self.exe, self.be = exe, exe.be
        prog = exe.program
        moved = sum(nbytes(prog.slot_avals[s]) for s in prog.input_slots) + sum(
            nbytes(o.aval if isinstance(o, Literal) else prog.slot_avals[o]) for o in prog.outputs)
        # worth it where launches dominate: several kernels, and inputs/outputs small enough
        # that copying them in and out of the graph's buffers costs less than the launches
        self.capturable = (graphs_enabled() and not exe.host_steps and len(exe.kernels) >= MIN_KERNELS
                           and moved <= MAX_COPY_BYTES
                           and not any(isinstance(o, Literal) for o in prog.outputs))
        self.graph, self.capture_error = None, None
        self.replays = 0

    # what jit and tests read off an executable
    def __getattr__(self, name):
        return getattr(self.exe, name)

    def __call__(self, inputs):
        if not self.capturable:
            return self.exe(inputs)
        if self.graph is None:
            try:
                self._capture(inputs)
            except Exception as e:   # a driver or pool that refuses capture: plain launches
                self.capturable, self.capture_error = False, e
                self.be.stream.synchronize()
                return self.exe(inputs)
        else:
            for fixed, b in zip(self.in_bufs, inputs):
                self._copy(fixed, b)
        self.graph.launch(self.be.stream)
        self.replays += 1
        outs = []
        for o in self.out_bufs:
            fresh = self.be.alloc(o.aval)
            self._copy(fresh, o)
            outs.append(fresh)
        return outs

    def _copy(self, dst, src):
        n = nbytes(src.aval)
        if n:
            dst.mem.data.data.copy_from_device_async(src.mem.data.data, n, self.be.stream)

    def _capture(self, inputs):
        be = self.be
        self.in_bufs = [be.alloc(b.aval) for b in inputs]
        for fixed, b in zip(self.in_bufs, inputs):
            self._copy(fixed, b)
        # a plain run first: the memory pool then holds blocks of every size the program
        # allocates, so capture allocates from the pool without cudaMalloc
        self.exe(self.in_bufs)
        be.stream.synchronize()
        kept = []
        plain_alloc = be.alloc

        def keep_alive(aval):
            b = plain_alloc(aval)
            kept.append(b.mem)
            return b
        be.alloc = keep_alive
        try:
            with be.device:
                be.stream.begin_capture()
                try:
                    outs = self.exe(self.in_bufs)
                finally:
                    graph = be.stream.end_capture()
        finally:
            del be.alloc          # back to the class's method
        self.graph, self.out_bufs, self.kept = graph, outs, kept
