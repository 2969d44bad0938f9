"""Kernel -> structured statements, with every value placed in the outermost loop where
its operands are known (loop-invariant code motion falls out of the free-variable sets).

Statements (tuples), shared by every renderer:
  ("def", name, expr, operand_names)          one value
  ("acc", name, expr)                         declare and initialise a reduce accumulator
  ("update", name, expr, value_name, loop_names)  fold one value into it
  ("loop", var_name, extent, body)            for var in [0, extent)
  ("store", slot, dtype, index_name, value_name)
The top level runs once per work item with the parallel index `g` already bound.
"""
from __future__ import annotations

from . import ir


class _Block:
    __slots__ = ("var", "stmts", "memo")

    def __init__(self, var):
        self.var, self.stmts, self.memo = var, [], {}


class Linearizer:
    def __init__(self):
        self.blocks = []
        self.count = 0
        self.var_names = {}     # loop vars renamed in order of appearance: sources are
        # then identical for identical kernels, whatever was lowered before (disk cache)

    def var_name(self, v):
        name = self.var_names.get(v)
        if name is None:
            prefix = v.arg[0][0]
            name = self.var_names[v] = f"{prefix}{sum(n[0] == prefix for n in self.var_names.values())}"
        return name

    def _fresh(self, prefix="v"):
        self.count += 1
        return f"{prefix}{self.count}"

    def _level(self, e):
        for i in range(len(self.blocks) - 1, 0, -1):
            if self.blocks[i].var in e.free:
                return i
        return 0

    def emit(self, e) -> str:
        if e.op == "var":
            return self.var_name(e)
        for b in reversed(self.blocks):
            name = b.memo.get(e)
            if name is not None:
                return name
        level = self._level(e)
        if e.op == "reduce":
            name = self._reduce(e, level)
        else:
            ops = [self.emit(a) for a in e.args]
            name = self._fresh()
            self.blocks[level].stmts.append(("def", name, e, ops))
        self.blocks[level].memo[e] = name
        return name

    def _reduce(self, e, level):
        name = self._fresh("acc")
        self.blocks[level].stmts.append(("acc", name, e))
        loops = e.arg[1]
        depth = len(self.blocks)
        for v in loops:
            self.blocks.append(_Block(v))
        val = self.emit(e.args[0])
        # over no loops (every reduced dim of size 1) the one update sits beside the acc
        inner = self.blocks[-1] if loops else self.blocks[level]
        inner.stmts.append(("update", name, e, val, [self.var_name(v) for v in loops]))
        body = None
        for v in reversed(loops):
            blk = self.blocks.pop()
            stmts = blk.stmts + ([body] if body else [])
            body = ("loop", self.var_name(v), v.arg[1], stmts)
        assert len(self.blocks) == depth
        if body is not None:
            self.blocks[level].stmts.append(body)
        out = self._fresh()
        self.blocks[level].stmts.append(("def", out, e, [name]))
        return out

    def run(self, kernel: ir.Kernel):
        """The statement list of one work item."""
        self.blocks = [_Block(kernel.par[0] if kernel.par else None)]
        if kernel.par:
            self.var_name(kernel.par[0])
        for v in kernel.ser:
            self.var_name(v)
            self.blocks.append(_Block(v))
        for st in kernel.stores:
            idx = self.emit(st.index)
            val = self.emit(st.value)
            self.blocks[-1].stmts.append(("store", st.slot, st.value.dtype, idx, val))
        body = None
        for v in reversed(kernel.ser):
            blk = self.blocks.pop()
            body = ("loop", self.var_name(v), v.arg[1], blk.stmts + ([body] if body else []))
        top = self.blocks.pop()
        return top.stmts + ([body] if body else [])


def linearize(kernel: ir.Kernel):
    """(statements, name of the parallel index)."""
    lin = Linearizer()
    stmts = lin.run(kernel)
    return stmts, lin.var_name(kernel.par[0])
