"""The main job: train a small CNN on 5,000 real MNIST digits (4,000 train / 1,000 test).

python -m polyjit demo train_mnist [--epochs N] [--plot curves.png] [--checkpoint ckpt.safetensors]
"""
import argparse
import time

import numpy as np

import polyjit as pj
from polyjit import nn, optim
from polyjit.nn import datasets, train


def make_model():
    return nn.Sequential(
        nn.Conv2d(16, 3, padding=1), nn.BatchNorm(), nn.relu, nn.MaxPool2d(2),
        nn.Conv2d(32, 3, padding=1), nn.BatchNorm(), nn.relu, nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(128), nn.relu, nn.Linear(10))


def random_shift(x, rng, max_shift=2):
    """Shift each image by up to max_shift pixels (zero fill): 4,000 digits need augmenting."""
    n = len(x)
    pad = np.pad(x, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    rows = dy[:, None] + np.arange(28)[None, :]
    cols = dx[:, None] + np.arange(28)[None, :]
    return pad[np.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def load_split(seed=0):
    x, y = datasets.mnist_5k()
    order = np.random.default_rng(seed).permutation(len(x))   # the file is sorted by label
    x, y = x[order], y[order]
    return (x[:4000], y[:4000]), (x[4000:], y[4000:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", help="write training curves to this PNG (needs matplotlib)")
    ap.add_argument("--checkpoint", help="save the training state here after every epoch")
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-augment", action="store_true", help="train without random shifts")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = load_split(args.seed)
    model = make_model()
    opt = optim.adam(optim.cosine_decay_schedule(args.lr, args.epochs * (len(xtr) // args.batch_size)))
    state = train.init_train_state(model, opt, pj.random.key(args.seed), xtr[:2])
    start = 0
    if args.resume:
        state, meta = train.load_checkpoint(args.checkpoint, state)
        start = meta["epoch"]
        print(f"resumed from {args.checkpoint} after epoch {start}")
    print(f"backend {pj.default_backend()}: {len(xtr)} train / {len(xte)} test digits, "
          f"{sum(np.asarray(p).size for p in pj.tree_util.tree_leaves(state['params'])):,} parameters")
    step = train.classifier_step(model, opt, seed=args.seed)
    state, history = train.fit(step, state, (xtr, ytr), epochs=args.epochs, batch_size=args.batch_size,
                               seed=args.seed, start_epoch=start, progress=not args.no_progress,
                               evaluate_fn=lambda s: train.evaluate(model, s, xte, yte),
                               checkpoint=args.checkpoint,
                               augment=None if args.no_augment else random_shift)
    if history:
        print(f"final test accuracy {history[-1]['test_accuracy']:.4f} "
              f"(wall time {time.perf_counter() - t0:.1f} s)")
    if args.plot and history:
        plot(history, args.plot)
    return state, history


def plot(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [h["loss"] for h in history], label="train")
    a.plot(ep, [h["test_loss"] for h in history], label="test")
    a.set(xlabel="epoch", ylabel="loss"), a.legend()
    b.plot(ep, [h["accuracy"] for h in history], label="train")
    b.plot(ep, [h["test_accuracy"] for h in history], label="test")
    b.set(xlabel="epoch", ylabel="accuracy"), b.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
