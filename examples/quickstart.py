"""Trace a small function, print its jaxpr, run it jitted on the default backend."""
import numpy as np

import polyjit as pj
import polyjit.numpy as pnp


def predict(params, x):
    for w, b in params:
        x = pnp.tanh(x @ w + b)
    return pnp.sum(x, axis=-1)


def main():
    key = pj.random.key(0)
    k1, k2, k3 = pj.random.split(key, 3)
    params = [(pj.random.normal(k1, (4, 8)), pnp.zeros(8)), (pj.random.normal(k2, (8, 2)), pnp.zeros(2))]
    x = pj.random.normal(k3, (3, 4))
    print("backend:", pj.default_backend())
    print(pj.make_jaxpr(predict)(params, x))
    f = pj.jit(predict)
    y = f(params, x)
    print("result:", y)
    ref = np.asarray(x, np.float64)
    for w, b in params:
        ref = np.tanh(ref @ np.asarray(w, np.float64) + np.asarray(b, np.float64))
    print("max |polyjit - numpy float64|:", float(np.max(np.abs(np.asarray(y) - ref.sum(-1)))))


if __name__ == "__main__":
    main()
