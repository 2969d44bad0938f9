"""Pytrees: nested tuples, lists, dicts, namedtuples, None and registered classes."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


class PyTreeDef:
    """The structure of a pytree: node type, static node data and child structures."""
    __slots__ = ("node_type", "node_data", "children", "num_leaves", "_hash")

    def __init__(self, node_type, node_data, children):
        self.node_type, self.node_data, self.children = node_type, node_data, children
        self.num_leaves = 1 if node_type is None else sum(c.num_leaves for c in children)
        self._hash = hash((node_type, node_data, children))

    def __eq__(self, other):
        return (self is other) or (isinstance(other, PyTreeDef) and self._hash == other._hash
                                   and self.node_type is other.node_type
                                   and self.node_data == other.node_data
                                   and self.children == other.children)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        if self.node_type is None:
            return "*"
        inner = ", ".join(map(repr, self.children))
        if self.node_type is dict:
            inner = ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.node_data, self.children))
            return "{" + inner + "}"
        if self.node_type is type(None):
            return "None"
        return f"{self.node_type.__name__}({inner})"


LEAF = PyTreeDef(None, None, ())
_registry: dict[type, tuple[Callable, Callable]] = {
    tuple: (lambda t: (t, None), lambda _, c: tuple(c)),
    list: (lambda t: (t, None), lambda _, c: list(c)),
    dict: (lambda d: (tuple(d[k] for k in sorted(d)), tuple(sorted(d))),
           lambda keys, c: dict(zip(keys, c))),
    type(None): (lambda _: ((), None), lambda _, c: None),
}


def register_pytree_node(cls, flatten: Callable, unflatten: Callable):
    """flatten(x) -> (children, aux_data); unflatten(aux_data, children) -> x."""
    _registry[cls] = (flatten, unflatten)
    return cls


def register_dataclass(cls=None, *, data_fields=None, meta_fields=()):
    """Register a dataclass: `data_fields` are children (default: all but `meta_fields`)."""
    def register(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        data = list(data_fields) if data_fields is not None else [n for n in names if n not in meta_fields]
        meta = list(meta_fields)

        def flatten(x):
            return tuple(getattr(x, n) for n in data), tuple(getattr(x, n) for n in meta)

        def unflatten(aux, children):
            obj = object.__new__(cls)
            for n, v in zip(data, children):
                object.__setattr__(obj, n, v)
            for n, v in zip(meta, aux):
                object.__setattr__(obj, n, v)
            return obj
        return register_pytree_node(cls, flatten, unflatten)
    return register if cls is None else register(cls)


def _node_rules(x):
    t = type(x)
    rules = _registry.get(t)
    if rules is None and isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        rules = _registry[t] = (lambda n: (tuple(n), None), lambda _, c, t=t: t(*c))
    return t, rules


def tree_flatten(tree, is_leaf=None) -> tuple[list, PyTreeDef]:
    leaves: list = []

    def rec(x):
        if is_leaf is not None and is_leaf(x):
            leaves.append(x)
            return LEAF
        t, rules = _node_rules(x)
        if rules is None:
            leaves.append(x)
            return LEAF
        children, aux = rules[0](x)
        return PyTreeDef(t, aux, tuple(rec(c) for c in children))
    return leaves, rec(tree)


def tree_unflatten(treedef: PyTreeDef, leaves):
    it = iter(leaves)

    def rec(td):
        if td.node_type is None:
            return next(it)
        return _registry[td.node_type][1](td.node_data, [rec(c) for c in td.children])
    out = rec(treedef)
    return out


def tree_leaves(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[1]


def tree_map(f, tree, *rest, is_leaf=None):
    leaves, td = tree_flatten(tree, is_leaf)
    others = []
    for r in rest:
        rl, rtd = tree_flatten(r, is_leaf)
        if rtd != td:
            raise ValueError(f"tree_map: structures differ: {td} vs {rtd}")
        others.append(rl)
    return tree_unflatten(td, [f(*xs) for xs in zip(leaves, *others)])


def tree_flatten_with_path(tree, prefix="") -> tuple[list[tuple[str, Any]], PyTreeDef]:
    """Leaves with a path string such as ``[0]['w']`` (used in error messages)."""
    leaves, td = tree_flatten(tree)
    paths = []

    def rec(t, p):
        if t.node_type is None:
            paths.append(p)
        elif t.node_type is dict:
            for k, c in zip(t.node_data, t.children):
                rec(c, f"{p}[{k!r}]")
        else:
            for i, c in enumerate(t.children):
                rec(c, f"{p}[{i}]")
    rec(td, prefix)
    return list(zip(paths, leaves)), td


def treedef_children(td: PyTreeDef):
    return list(td.children)
