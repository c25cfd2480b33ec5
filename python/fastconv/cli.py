"""The `fastconv` command: `fastconv train` trains a small CNN, `fastconv predict` classifies.

    fastconv train                                   # small CNN on scikit-learn's digits
    fastconv train --dataset mnist DIR --model lenet --epochs 5
    fastconv train --dataset cifar10 DIR --model resnet8 --augment
    mpiexec -n 2 fastconv train --distributed      # data-parallel over 2 MPI ranks
    fastconv predict fastconv-run/model.npz image.png ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

EXTRA_HINT = 'install it with: pip install "fastconv[datasets]"'

# Defaults per data set: model, epochs, batch size.
DATASET_DEFAULTS = {
    "digits": ("small-cnn", 12, 32),
    "mnist": ("lenet", 5, 64),
    "fashion-mnist": ("lenet", 10, 64),
    "cifar10": ("small-cnn", 15, 32),
    "folder": ("small-cnn", 15, 32),
}
OPTIMIZER_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description="Train and run small CNNs "
                                     "on the CPU with fastconv's kernels.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a CNN and save it",
                                description="Train a CNN; with no options, a small CNN on "
                                "scikit-learn's handwritten digits.")
    train.add_argument("--dataset", nargs="+", default=["digits"], metavar="NAME [PATH]",
                       help="digits | mnist PATH | fashion-mnist PATH | cifar10 PATH | "
                            "folder PATH (one sub-folder of images per class)")
    train.add_argument("--model", choices=["lenet", "small-cnn", "resnet8"],
                       help="architecture (default: lenet for MNIST, small-cnn otherwise)")
    train.add_argument("--epochs", type=int, help="epochs (default depends on the data set)")
    train.add_argument("--batch-size", type=int, help="batch size (default 32, MNIST 64)")
    train.add_argument("--optimizer", choices=sorted(OPTIMIZER_LR), default="adam")
    train.add_argument("--lr", type=float, help="peak learning rate (default: sgd 0.05, "
                                                "adam/adamw 0.002)")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--scheduler", choices=["onecycle", "cosine", "step", "none"],
                       default="onecycle")
    train.add_argument("--augment", action="store_true",
                       help="random crops (padding 2 or 4) and, for colour images, flips")
    train.add_argument("--image-size", type=int, default=32,
                       help="image size for --dataset folder (default 32)")
    train.add_argument("--test-fraction", type=float, default=0.2,
                       help="held-out share for digits and folder (default 0.2)")
    train.add_argument("--threads", type=int, help="kernel threads (default: all cores; with "
                                                   "--distributed, per rank: cores / ranks on "
                                                   "each machine)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI: start with mpiexec -n P; --batch-size is "
                            "the global batch, split over the ranks (needs fastconv[mpi])")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output-dir", default="fastconv-run",
                       help="where model.npz, checkpoint.npz, history.csv and curves.png go")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    predict = commands.add_parser("predict", help="classify images with a saved model")
    predict.add_argument("model", help="a model.npz written by fastconv train")
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--top", type=int, default=1, help="how many classes to show")
    return parser


def _load_data(name: str, path: str | None, args):
    """(train, test, class names) ArrayDatasets for the data set `name`."""
    from . import data
    if name == "digits":
        train, test = data.load_digits(test_fraction=args.test_fraction, seed=args.seed)
        return train, test, [str(i) for i in range(10)]
    if path is None:
        raise SystemExit(f"fastconv train: --dataset {name} needs a PATH")
    if name in ("mnist", "fashion-mnist"):
        return data.load_mnist(path, train=True), data.load_mnist(path, train=False), None
    if name == "cifar10":
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
        return data.load_cifar10(path, train=True), data.load_cifar10(path, train=False), classes
    if name == "folder":
        folder = data.ImageFolder(path, size=args.image_size)
        train, test = data.train_test_split(folder, test_fraction=args.test_fraction,
                                            seed=args.seed)
        return train, test, list(folder.classes)
    raise SystemExit(f"fastconv train: unknown data set {name!r}; expected one of "
                     f"{sorted(DATASET_DEFAULTS)}")


def _channel_statistics(dataset, limit: int = 10000, seed: int = 0):
    """Per-channel mean and std of (up to `limit` random) training images."""
    from .data.dataset import read_batch
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.permutation(len(dataset))[:limit])
    images, _ = read_batch(dataset, indices)
    mean = images.mean(axis=(0, 2, 3))
    std = images.std(axis=(0, 2, 3))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _num_classes(*datasets) -> int:
    from .data.dataset import _labels_of
    return int(max(int(_labels_of(d).max()) for d in datasets)) + 1


def train_command(args) -> int:
    from . import data, models, nn, optim, set_num_threads, summary, train
    from .data.dataset import read_batch
    from .random import manual_seed

    name, path = args.dataset[0], (args.dataset[1] if len(args.dataset) > 1 else None)
    if len(args.dataset) > 2 or name not in DATASET_DEFAULTS:
        print(f"fastconv train: --dataset expects NAME [PATH] with NAME one of "
              f"{sorted(DATASET_DEFAULTS)}, got {' '.join(args.dataset)}", file=sys.stderr)
        return 2
    default_model, default_epochs, default_batch = DATASET_DEFAULTS[name]
    model_name = args.model or default_model
    epochs = args.epochs if args.epochs is not None else default_epochs
    batch_size = args.batch_size or default_batch
    lr = args.lr if args.lr is not None else OPTIMIZER_LR[args.optimizer]
    rank = 0
    if args.distributed:
        from . import distributed
        try:
            comm = distributed.init(num_threads=args.threads)
        except ImportError as error:
            print(f"fastconv train: --distributed: {error}", file=sys.stderr)
            return 2
        rank = comm.Get_rank()
        if batch_size % comm.Get_size():
            if rank == 0:
                print(f"fastconv train: --batch-size {batch_size} is the global batch; it must "
                      f"be a multiple of the {comm.Get_size()} ranks", file=sys.stderr)
            return 2
    elif args.threads is not None:
        set_num_threads(args.threads)
    main = rank == 0

    def log(text: str) -> None:
        if main:
            print(text, file=sys.stderr)

    manual_seed(args.seed)

    try:
        train_set, test_set, classes = _load_data(name, path, args)
    except ImportError as error:
        print(f"fastconv train: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"fastconv train: {error}", file=sys.stderr)
        return 2
    sample, _ = read_batch(train_set, np.array([0]))
    in_channels, image_size = sample.shape[1], sample.shape[2]
    num_classes = _num_classes(train_set, test_set)
    classes = classes or [str(i) for i in range(num_classes)]
    mean, std = _channel_statistics(train_set, seed=args.seed)

    normalize = data.Normalize(mean, std)
    train_transform = normalize
    if args.augment:
        # Each rank draws its own crops and flips (seeds apart by rank).
        steps = [data.RandomCrop(image_size, padding=4 if image_size >= 28 else 2,
                                 rng=args.seed + 1000 * rank)]
        if in_channels == 3:
            steps.append(data.RandomHorizontalFlip(rng=args.seed + 1 + 1000 * rank))
        train_transform = data.Compose(steps + [normalize])
    train_loader = data.DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                   seed=args.seed, transform=train_transform)
    test_loader = data.DataLoader(test_set, batch_size=256, transform=normalize)

    model = models.build(model_name, in_channels, num_classes, image_size)
    ranks = f" on {comm.Get_size()} ranks" if args.distributed else ""
    log(f"fastconv train: {model_name} on {name} ({len(train_set)} training, "
        f"{len(test_set)} test images of {in_channels}x{image_size}x{image_size}, "
        f"{num_classes} classes), {epochs} epochs, batch {batch_size}{ranks}, "
        f"{args.optimizer} lr {lr}, {args.scheduler} schedule")
    if main:
        summary(model, (1, in_channels, image_size, image_size), print_fn=log)

    optimizer_class = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}[args.optimizer]
    options = {"momentum": 0.9, "nesterov": True} if args.optimizer == "sgd" else {}
    optimizer = optimizer_class(model.parameters(), lr=lr, weight_decay=args.weight_decay,
                                **options)
    steps = len(train_loader)
    scheduler = {
        "onecycle": lambda: optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                          steps_per_epoch=steps),
        "cosine": lambda: optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs),
        "step": lambda: optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3)),
        "none": lambda: None,
    }[args.scheduler]() if epochs > 0 else None

    out = Path(args.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    history = train.fit(model, nn.CrossEntropyLoss(), optimizer, train_loader, test_loader,
                        epochs=epochs, scheduler=scheduler, progress=not args.no_progress,
                        checkpoint_path=out / "checkpoint.npz", resume=args.resume,
                        history_path=out / "history.csv", distributed=args.distributed)
    seconds = time.perf_counter() - start
    if not main:
        return 0  # rank 0 evaluates, saves and reports
    result = train.evaluate(model, test_loader, nn.CrossEntropyLoss())
    meta = {"model": model_name, "in_channels": int(in_channels), "image_size": int(image_size),
            "num_classes": num_classes, "classes": classes, "mean": mean.tolist(),
            "std": std.tolist(), "dataset": name}
    train.save_checkpoint(out / "model.npz", model, extra=meta)
    history.to_json(out / "history.json")
    plotted = train.plot_history(history, out / "curves.png") if len(history) else False
    print(f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) on "
          f"{result['samples']} held-out images after {len(history)} epochs in {seconds:.1f} s")
    print(f"saved {out / 'model.npz'}, {out / 'checkpoint.npz'}, {out / 'history.csv'}"
          + (f", {out / 'curves.png'}" if plotted else ""))
    return 0


def predict_command(args) -> int:
    from . import data, models, train
    from .nn import functional as F
    from .tensor import no_grad

    try:
        meta = train.read_checkpoint_meta(args.model)["extra"]
        model = models.build(meta["model"], meta["in_channels"], meta["num_classes"],
                             meta["image_size"])
        train.load_checkpoint(args.model, model)
    except (OSError, ValueError, KeyError) as error:
        print(f"fastconv predict: {args.model}: not a model saved by fastconv train ({error})",
              file=sys.stderr)
        return 2
    model.eval()
    mean = np.asarray(meta["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], np.float32).reshape(1, -1, 1, 1)
    status = 0
    for path in args.images:
        try:
            image = data.load_image(path, size=meta["image_size"],
                                    grayscale=meta["in_channels"] == 1)
        except (OSError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            status = 1
            continue
        with no_grad():
            probabilities = F.softmax(model((image[None] - mean) / std), dim=1).numpy()[0]
        best = np.argsort(probabilities)[::-1][:max(1, args.top)]
        print(f"{path}: " + ", ".join(f"{meta['classes'][i]} ({probabilities[i]:.3f})"
                                      for i in best))
    return status


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        return train_command(args)
    return predict_command(args)


if __name__ == "__main__":
    sys.exit(main())
