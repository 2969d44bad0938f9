"""Memory planning by liveness: intermediate slots share physical blocks.

Each slot a kernel writes gets a block; a block returns to the free list after the step
that last reads its slot, and a later slot of the same byte size takes it over. Blocks
freed by a step are reused only by later steps, since a kernel's work items may still
read an input while others write the output. Program outputs take blocks too, but never
give them back (their memory is handed to the caller; a call's blocks are allocated
afresh per call). Constants and inputs belong to the caller and are never reused, except
donated inputs (`donate_argnums`): a donated input's buffer becomes a block after the step
that last reads it, and the kernel of that step may overwrite it in place when
`in_place(step, slot, donor)` says its work items read each donated element only at the
index they write it (program.py checks that and rewrites the kernel's store).
Slots written by host steps get their buffers from the host step, not from the plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


def nbytes(aval) -> int:
    return max(int(math.prod(aval.shape)) * aval.dtype.itemsize, 1)


@dataclass
class MemoryPlan:
    block_of: dict          # slot -> block number
    block_bytes: list       # bytes of each block
    free_after: list        # per step: slots whose last use it is (drop references)
    output_slots: set
    donor_of: dict = field(default_factory=dict)   # block -> donated input slot it is the buffer of
    in_place: dict = field(default_factory=dict)   # slot -> donated slot its kernel overwrites

    @property
    def workspace_bytes(self) -> int:
        return sum(n for b, n in enumerate(self.block_bytes) if b not in self.donor_of)


def plan_memory(prog, donated=(), in_place=None) -> MemoryPlan:
    """`donated`: input slots whose buffers the program may take over; `in_place(step
    index, written slot, donated slot)`: may that step's kernel write the slot over the
    donated buffer it reads last?"""
    pinned = set(prog.const_slots) | set(prog.input_slots)
    outs = {s for s in prog.outputs if isinstance(s, int)}
    last = {}
    for i, st in enumerate(prog.steps):
        for s in st.reads:
            last[s] = i
    block_of, sizes, free = {}, [], {}
    free_after = [[] for _ in prog.steps]
    donor_block, claimed = {}, set()
    donors = [d for d in dict.fromkeys(donated)
              if d in prog.input_slots and d not in outs and d not in prog.const_slots]
    for d in donors:
        donor_block[d] = len(sizes)
        sizes.append(nbytes(prog.slot_avals[d]))
        if d not in last:                             # never read: reusable from the start
            free.setdefault(sizes[-1], []).append(donor_block[d])
    ready_at = {}                                     # step -> donors read last there
    for d in donors:
        if d in last:
            ready_at.setdefault(last[d], []).append(d)
    alias = {}
    for i, st in enumerate(prog.steps):
        kernel_step = getattr(st, "kernel", None) is not None
        for s in st.writes:
            if s in pinned:
                continue
            if kernel_step:
                block_of[s] = _take_block(prog, i, s, ready_at, claimed, donor_block, alias,
                                          free, sizes, in_place)
            if s not in last and s not in outs:       # written, never read: free at once
                free_after[i].append(s)
        for s in st.reads:
            if last.get(s) == i and s not in pinned and s not in outs:
                free_after[i].append(s)
        for s in free_after[i]:
            if s in block_of:
                free.setdefault(sizes[block_of[s]], []).append(block_of[s])
        for d in ready_at.get(i, ()):                 # a donated input read for the last time
            if d not in claimed:
                free.setdefault(sizes[donor_block[d]], []).append(donor_block[d])
    used = set(block_of.values())
    donor_of = {b: d for d, b in donor_block.items() if b in used}
    for b in set(donor_block.values()) - used:        # donated but not reusable: no block
        sizes[b] = 0
    return MemoryPlan(block_of, sizes, free_after, outs, donor_of, alias)


def _take_block(prog, i, s, ready_at, claimed, donor_block, alias, free, sizes, in_place):
    """The block for slot `s`, written by step `i`: a donated input that step reads last,
    overwritten in place where allowed; else a free block of its size; else a new one."""
    aval = prog.slot_avals[s]
    size = nbytes(aval)
    for d in ready_at.get(i, ()):
        if (d not in claimed and nbytes(prog.slot_avals[d]) == size
                and prog.slot_avals[d].dtype == aval.dtype
                and in_place is not None and in_place(i, s, d)):
            claimed.add(d)
            alias[s] = d
            return donor_block[d]
    pool = free.get(size)
    if pool:
        return pool.pop()
    sizes.append(size)
    return len(sizes) - 1
