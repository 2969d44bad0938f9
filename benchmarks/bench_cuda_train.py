"""A jitted LeNet-style training step on the GPU: conv 32, conv 64 (3x3, relu, maxpool 2),
linear 128, linear 10, softmax cross-entropy, Adam, batch 256, float32; polyjit's cuda
backend beside PyTorch eager and torch.compile on the same GPU, in one process, from the
same initial weights and batch (the first step's loss is checked against PyTorch's).

  python benchmarks/bench_cuda_train.py [out.json]
  python benchmarks/bench_cuda_train.py --profile     # GPU time per polyjit kernel, no graphs

Times are per step over N back-to-back steps after warm-up, synchronizing once at the end.
"""
import json
import sys
import time

import numpy as np

import polyjit as pj
from polyjit import backends, nn, optim
from polyjit.nn import train

BATCH, STEPS = 256, 50


def _batch():
    r = np.random.default_rng(0)
    return r.random((BATCH, 1, 28, 28), dtype=np.float32), r.integers(0, 10, BATCH).astype(np.int32)


def _torch_model(torch):
    torch.manual_seed(0)
    t = torch.nn
    return t.Sequential(t.Conv2d(1, 32, 3), t.ReLU(), t.MaxPool2d(2),
                        t.Conv2d(32, 64, 3), t.ReLU(), t.MaxPool2d(2),
                        t.Flatten(), t.Linear(64 * 5 * 5, 128), t.ReLU(), t.Linear(128, 10))


def _polyjit_model():
    return nn.Sequential(nn.Conv2d(32, 3), nn.relu, nn.MaxPool2d(2),
                         nn.Conv2d(64, 3), nn.relu, nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(128), nn.relu, nn.Linear(10))


def _weights(tm):
    d = lambda m: {"weight": m.weight.detach().cpu().numpy().copy(),  # noqa: E731
                   "bias": m.bias.detach().cpu().numpy().copy()}
    return {"0": d(tm[0]), "3": d(tm[3]), "7": d(tm[7]), "9": d(tm[9])}


def _timed(run, sync, n=STEPS):
    for _ in range(3):
        run()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        out = run()
    sync()
    return (time.perf_counter() - t) / n * 1e3, out


def bench_polyjit(tm, x, y):
    with backends.using("cuda"):
        model, opt = _polyjit_model(), optim.adam(1e-3)
        state = train.init_train_state(model, opt, pj.random.key(0), x[:2])
        state["params"] = _weights(tm)
        state["opt_state"] = opt.init(state["params"])
        state = pj.tree_util.tree_map(pj.device_put, state)
        step = train.classifier_step(model, opt)
        xb, yb = pj.device_put(x), pj.device_put(y)
        t0 = time.perf_counter()
        _, m = step(state, xb, yb)
        first_loss = float(m["loss"])
        compile_s = time.perf_counter() - t0
        box = [state, None]

        def run():
            box[0], box[1] = step(box[0], xb, yb)
        be = backends.get_backend("cuda")
        ms, _ = _timed(run, lambda: be.stream.synchronize())
    return {"ms": ms, "first_loss": first_loss, "compile_s": compile_s}


def bench_torch(torch, x, y, compiled=False):
    tm = _torch_model(torch).cuda()
    opt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x).cuda(), torch.tensor(y, dtype=torch.long).cuda()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(tm(xt), yt)
        loss.backward()
        opt.step()
        return loss
    fn = torch.compile(step) if compiled else step
    t0 = time.perf_counter()
    first = float(fn())
    compile_s = time.perf_counter() - t0
    ms, _ = _timed(fn, torch.cuda.synchronize)
    return {"ms": ms, "first_loss": first, "compile_s": compile_s}


def profile_polyjit(tm, x, y, top=15):
    """GPU milliseconds per kernel of one step (CUDA events around each launch, graphs off)."""
    import os
    import cupy as cp
    from polyjit.backends import compiled
    os.environ["POLYJIT_CUDA_GRAPHS"] = "0"
    times, plain = {}, compiled.Executable._run_kernel

    def timed(self, step, env):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(self.be.stream)
        plain(self, step, env)
        b.record(self.be.stream)
        times.setdefault(step.kernel.name, []).append((a, b, step.kernel.global_size))
    compiled.Executable._run_kernel = timed
    try:
        bench_polyjit(tm, x, y)
    finally:
        compiled.Executable._run_kernel = plain
    rows = sorted(((sum(cp.cuda.get_elapsed_time(a, b) for a, b, _ in v) / len(v), n, v[0][2])
                   for n, v in times.items()), reverse=True)
    total = sum(r[0] for r in rows)
    print(f"{len(rows)} kernels, {total:.3f} ms of GPU time per step")
    for ms, name, work in rows[:top]:
        print(f"{ms:9.4f} ms  {work:>9} work items  {name}")


def main():
    import torch
    if "--profile" in sys.argv:
        x, y = _batch()
        return profile_polyjit(_torch_model(torch), x, y)
    x, y = _batch()
    tm = _torch_model(torch)
    out = {"batch": BATCH, "device": torch.cuda.get_device_name()}
    out["torch_eager"] = bench_torch(torch, x, y)
    out["polyjit_cuda"] = bench_polyjit(tm, x, y)
    assert abs(out["polyjit_cuda"]["first_loss"] - out["torch_eager"]["first_loss"]) < 1e-4 * max(
        1.0, abs(out["torch_eager"]["first_loss"])), out
    try:
        out["torch_compile"] = bench_torch(torch, x, y, compiled=True)
    except Exception as e:       # no triton or a compile failure: say so, keep the rest
        out["torch_compile"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    pj_ms = out["polyjit_cuda"]["ms"]
    out["ratio_torch_eager_over_polyjit"] = out["torch_eager"]["ms"] / pj_ms
    if "ms" in out["torch_compile"]:
        out["ratio_torch_compile_over_polyjit"] = out["torch_compile"]["ms"] / pj_ms
    text = json.dumps(out, indent=1)
    print(text)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)


if __name__ == "__main__":
    main()
