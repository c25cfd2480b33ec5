"""The training loop: fit, evaluate, callbacks, checkpoints and learning curves.

    history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=10)

A `Trainer` runs the loop; what a distributed run (fastconv.distributed) changes is confined to
five of its methods: `batches` (the epoch's batches), `train_step` (one step), `after_backward`
(average gradients across processes), `reduce_sums` (add metrics across processes) and
`is_main` (only one process prints and writes files).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .tensor import Tensor, no_grad

__all__ = ["fit", "evaluate", "Trainer", "History", "Callback", "EarlyStopping",
           "ModelCheckpoint", "save_checkpoint", "load_checkpoint", "read_checkpoint_meta",
           "plot_history"]


# ---------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------

class History:
    """Per-epoch metrics: `history.epochs` is a list of dicts (epoch, train_loss, train_accuracy,
    val_loss, val_accuracy, lr, seconds, samples_per_second)."""

    def __init__(self, epochs=None):
        self.epochs: list[dict] = list(epochs or [])

    def append(self, record: dict) -> None:
        self.epochs.append(dict(record))

    def __getitem__(self, key: str) -> list:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.epochs, indent=1))

    def to_csv(self, path) -> None:
        keys = list(dict.fromkeys(k for e in self.epochs for k in e))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.epochs)

    def save(self, path) -> None:
        """Write as CSV or JSON, by the file's suffix."""
        path = Path(path)
        if path.suffix == ".csv":
            self.to_csv(path)
        elif path.suffix == ".json":
            self.to_json(path)
        else:
            raise ValueError(f"history path: expected a .csv or .json file, got {path}")


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------

class Callback:
    """Hooks into fit. `trainer.stop = True` ends training after the current epoch."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer, epoch: int):
        pass

    def on_after_backward(self, trainer):
        pass

    def on_batch_end(self, trainer, batch: int, logs: dict):
        pass

    def on_epoch_end(self, trainer, epoch: int, logs: dict):
        pass

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by min_delta for `patience` epochs; optionally put
    back the best weights at the end."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True):
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min', 'max' or 'auto', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience: must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best = mode, restore_best
        self.best, self.best_state, self.wait, self.stopped_epoch = None, None, 0, None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"EarlyStopping: metric {self.monitor!r} not in the epoch's logs "
                           f"{sorted(logs)}; pass a val_loader to monitor val_*")
        if self._improved(value):
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.stopped_epoch = epoch
                trainer.stop = True

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save model and optimizer (and scheduler) to `path` (.npz) after every epoch, or only
    when `monitor` improves."""

    def __init__(self, path, monitor: str | None = None, mode: str = "auto"):
        self.path, self.monitor = Path(path), monitor
        self.mode = ("max" if monitor and "acc" in monitor else "min") if mode == "auto" else mode
        self.best = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor is not None:
            value = logs[self.monitor]
            better = self.best is None or (value < self.best if self.mode == "min"
                                           else value > self.best)
            if not better:
                return
            self.best = value
        if trainer.is_main():
            save_checkpoint(self.path, trainer.model, trainer.optimizer, trainer.scheduler,
                            epoch=epoch + 1, history=trainer.history)


# ---------------------------------------------------------------------------------------------
# Checkpoints: one .npz of arrays (no pickle); nested non-array state as JSON inside it
# ---------------------------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"checkpoint: cannot store {type(value).__name__} as JSON")


def _restore_tuples(value):
    """JSON turns tuples (Adam's betas) into lists; turn lists of numbers back."""
    if isinstance(value, dict):
        return {k: (v if k == "params" else _restore_tuples(v)) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return tuple(value)
    if isinstance(value, list):
        return [_restore_tuples(v) for v in value]
    return value


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch: int = 0,
                    history: History | None = None, extra: dict | None = None) -> None:
    """Write model, optimizer and scheduler state to one .npz file (atomically)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    meta = {"epoch": epoch, "history": history.epochs if history else [], "extra": extra or {}}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for index, entry in state["state"].items():
            for name, value in entry.items():
                if isinstance(value, np.ndarray):
                    arrays[f"optimizer/{index}/{name}"] = value
                else:
                    scalars.setdefault(str(index), {})[name] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    arrays["meta.json"] = np.frombuffer(json.dumps(meta, default=_json_default).encode(),
                                        dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(arrays, metadata) of a checkpoint file, with a clear error for anything else."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(arrays.pop("meta.json").tobytes().decode())
    except KeyError:
        raise ValueError(f"checkpoint {path}: not a fastconv checkpoint (no meta.json)") from None
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"checkpoint {path}: cannot read it ({error})") from error
    return arrays, meta


def read_checkpoint_meta(path) -> dict:
    """The metadata of a checkpoint ({'epoch', 'history', 'extra'}) without loading it."""
    _, meta = _read_checkpoint(Path(path))
    return {"epoch": meta["epoch"], "history": meta["history"], "extra": meta["extra"]}


def load_checkpoint(path, model, optimizer=None, scheduler=None) -> dict:
    """Load what save_checkpoint wrote into model (and optimizer, scheduler); returns the
    metadata: {'epoch', 'history', 'extra'}."""
    path = Path(path)
    arrays, meta = _read_checkpoint(path)
    model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items()
                           if k.startswith("model/")})
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"checkpoint {path}: holds no optimizer state")
        state = {}
        for key, value in arrays.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in meta["optimizer"]["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups":
                                   _restore_tuples(meta["optimizer"]["param_groups"])})
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(_restore_tuples(meta["scheduler"]))
    return {"epoch": meta["epoch"], "history": meta["history"], "extra": meta["extra"]}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def _batch_sums(logits: Tensor, target: np.ndarray, loss: Tensor, reduction_mean: bool):
    """(summed loss, correct predictions, samples) of one batch."""
    n = len(target)
    loss_sum = float(loss.item()) * (n if reduction_mean else 1)
    correct = 0
    if logits.ndim == 2 and np.asarray(target).ndim == 1 and target.dtype.kind in "iu":
        correct = int((logits.data.argmax(axis=1) == target).sum())
    return np.array([loss_sum, correct, n], dtype=np.float64)


class _Progress:
    """tqdm when it is installed, else one line per epoch."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=description, leave=True, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, logs: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.3f}",
                                 samples_s=f"{logs['samples_per_second']:.0f}", refresh=False)

    def close(self, summary: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(summary)
            self.bar.close()
        elif self.enabled:
            print(summary, file=sys.stderr, flush=True)


class Trainer:
    """State of one fit: model, loss, optimizer, scheduler, loaders, callbacks, history."""

    def __init__(self, model, loss_fn, optimizer, scheduler=None, callbacks=(), progress=True):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.scheduler = scheduler
        self.callbacks = list(callbacks)
        self.progress = progress
        self.history = History()
        self.stop = False
        self.epoch = 0
        self.batch = 0

    # The places where a distributed run (fastconv.distributed.DistributedTrainer) differs.
    def batches(self, loader):
        """The (x, y) batches of one epoch."""
        return iter(loader)

    def train_step(self, x, y) -> np.ndarray:
        """One optimisation step on batch (x, y); returns its (loss sum, correct, samples)."""
        self.optimizer.zero_grad()
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch "
                                     f"{self.epoch + 1}, batch {self.batch}")
        loss.backward()
        self.after_backward()
        self.optimizer.step()
        reduction_mean = getattr(self.loss_fn, "reduction", "mean") == "mean"
        return _batch_sums(logits, np.asarray(y), loss, reduction_mean)

    def after_backward(self) -> None:
        for c in self.callbacks:
            c.on_after_backward(self)

    def reduce_sums(self, sums: np.ndarray) -> np.ndarray:
        return sums

    def is_main(self) -> bool:
        return True

    def _scheduler_every(self) -> str:
        return getattr(self.scheduler, "step_every", "epoch") if self.scheduler else "none"

    def train_epoch(self, loader) -> dict:
        self.model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        sums = np.zeros(3)
        progress = _Progress(len(loader), f"epoch {self.epoch + 1}",
                             self.progress and self.is_main())
        start = time.perf_counter()
        for batch, (x, y) in enumerate(self.batches(loader)):
            self.batch = batch
            sums += self.train_step(x, y)
            if self._scheduler_every() == "batch":
                self.scheduler.step()
            elapsed = time.perf_counter() - start
            logs = {"loss": sums[0] / sums[2], "accuracy": sums[1] / sums[2],
                    "samples_per_second": sums[2] / max(elapsed, 1e-9)}
            progress.update(logs)
            for c in self.callbacks:
                c.on_batch_end(self, batch, logs)
        seconds = time.perf_counter() - start
        total = self.reduce_sums(sums)
        result = {"train_loss": total[0] / max(total[2], 1),
                  "train_accuracy": total[1] / max(total[2], 1), "seconds": seconds,
                  "samples_per_second": total[2] / max(seconds, 1e-9)}
        progress.close(f"loss {result['train_loss']:.4f}, accuracy "
                       f"{result['train_accuracy']:.4f}, {result['samples_per_second']:.0f} "
                       f"samples/s")
        return result

    def evaluate(self, loader) -> dict:
        self.model.eval()
        reduction_mean = getattr(self.loss_fn, "reduction", "mean") == "mean"
        sums = np.zeros(3)
        with no_grad():
            for x, y in loader:
                logits = self.model(x)
                sums += _batch_sums(logits, np.asarray(y), self.loss_fn(logits, y),
                                    reduction_mean)
        total = self.reduce_sums(sums)
        return {"loss": total[0] / max(total[2], 1), "accuracy": total[1] / max(total[2], 1),
                "samples": int(total[2])}

    def fit(self, train_loader, val_loader=None, epochs: int = 1, start_epoch: int = 0):
        for c in self.callbacks:
            c.on_train_begin(self)
        for epoch in range(start_epoch, epochs):
            self.epoch = epoch
            for c in self.callbacks:
                c.on_epoch_begin(self, epoch)
            logs = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            logs.update(self.train_epoch(train_loader))
            if val_loader is not None:
                val = self.evaluate(val_loader)
                logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
                if self.progress and self.is_main():
                    print(f"epoch {epoch + 1}: val loss {val['loss']:.4f}, val accuracy "
                          f"{val['accuracy']:.4f}", file=sys.stderr, flush=True)
            if self._scheduler_every() == "epoch":
                self.scheduler.step()
            self.history.append(logs)
            for c in self.callbacks:
                c.on_epoch_end(self, epoch, logs)
            if self.stop:
                break
        for c in self.callbacks:
            c.on_train_end(self)
        return self.history


def fit(model, loss_fn, optimizer, train_loader, val_loader=None, epochs: int = 1,
        scheduler=None, callbacks=(), progress: bool = True, history_path=None,
        checkpoint_path=None, resume=None, plot_path=None, trainer_class=Trainer,
        distributed: bool = False) -> History:
    """Train `model` for `epochs` epochs and return the History of per-epoch metrics.

    scheduler: stepped after every batch if its `step_every` is "batch" (OneCycleLR), else
        after every epoch.
    history_path: write the history there (.csv or .json) after training.
    checkpoint_path: save model + optimizer + scheduler there (.npz) after every epoch.
    resume: a checkpoint to continue from (its epoch count and history carry on).
    plot_path: a PNG of the learning curves (needs matplotlib).
    distributed: data-parallel over MPI (start the script with ``mpiexec -n P``; needs
        ``fastconv[mpi]``): the loaders' batch size is the global batch, split over the ranks;
        see fastconv.distributed. Only rank 0 prints and writes files.
    """
    if epochs < 0:
        raise ValueError(f"epochs: must be >= 0, got {epochs}")
    if distributed:
        from . import distributed as dist
        comm = dist.init()
        train_loader = dist.shard_loader(train_loader, comm)
        if val_loader is not None:
            val_loader = dist.shard_loader(val_loader, comm, global_batch=False)
        if trainer_class is Trainer:
            trainer_class = dist.DistributedTrainer
    callbacks = list(callbacks)
    if checkpoint_path is not None:
        callbacks.append(ModelCheckpoint(checkpoint_path))
    trainer = trainer_class(model, loss_fn, optimizer, scheduler, callbacks, progress)
    start_epoch = 0
    if resume is not None:
        meta = load_checkpoint(resume, model, optimizer, scheduler)
        start_epoch = meta["epoch"]
        trainer.history = History(meta["history"])
    history = trainer.fit(train_loader, val_loader, epochs, start_epoch)
    if trainer.is_main():
        if history_path is not None:
            history.save(history_path)
        if plot_path is not None:
            plot_history(history, plot_path)
    return history


def evaluate(model, loader, loss_fn=None) -> dict:
    """Loss (when loss_fn is given), accuracy and sample count of model on loader."""
    if loss_fn is None:
        from .nn import CrossEntropyLoss
        loss_fn = CrossEntropyLoss()
    return Trainer(model, loss_fn, optimizer=None, progress=False).evaluate(loader)


def plot_history(history: History, path) -> bool:
    """Plot loss and accuracy curves to a PNG; returns False (and plots nothing) without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("fastconv: matplotlib is not installed; no learning-curve plot "
              "(pip install matplotlib)", file=sys.stderr)
        return False
    epochs = history["epoch"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((left, "loss"), (right, "accuracy")):
        axis.plot(epochs, history[f"train_{metric}"], marker="o", label="train")
        if any(v is not None for v in history[f"val_{metric}"]):
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
