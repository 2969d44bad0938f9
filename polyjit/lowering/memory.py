"""Memory planning by liveness: intermediate slots share physical blocks.

Each intermediate slot gets a block; a block returns to the free list after the step
that last reads its slot, and a later slot of the same byte size takes it over. Blocks
freed by a step are reused only by later steps, since a kernel's work items may still
read an input while others write the output. Program outputs get fresh buffers (they
are handed to the caller); constants and inputs belong to the caller and are never
reused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def nbytes(aval) -> int:
    return max(int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize, 1)


@dataclass
class MemoryPlan:
    block_of: dict          # intermediate slot -> block number
    block_bytes: list       # bytes of each block
    free_after: list        # per step: slots whose last use it is (drop references)
    output_slots: set

    @property
    def workspace_bytes(self) -> int:
        return sum(self.block_bytes)


def plan_memory(prog) -> MemoryPlan:
    pinned = set(prog.const_slots) | set(prog.input_slots)
    outs = {s for s in prog.outputs if isinstance(s, int)}
    last = {}
    for i, st in enumerate(prog.steps):
        for s in st.reads:
            last[s] = i
    block_of, sizes, free = {}, [], {}
    free_after = [[] for _ in prog.steps]
    for i, st in enumerate(prog.steps):
        for s in st.writes:
            if s in pinned or s in outs:
                continue
            size = nbytes(prog.slot_avals[s])
            pool = free.get(size)
            if pool:
                block_of[s] = pool.pop()
            else:
                block_of[s] = len(sizes)
                sizes.append(size)
            if s not in last:                     # written, never read: free at once
                free_after[i].append(s)
        for s in st.reads:
            if last.get(s) == i and s not in pinned and s not in outs:
                free_after[i].append(s)
        for s in free_after[i]:
            if s in block_of:
                free.setdefault(sizes[block_of[s]], []).append(block_of[s])
    return MemoryPlan(block_of, sizes, free_after, outs)
