"""What tests/test_distributed.py runs under ``mpiexec -n 2`` (and some of it in one process).

    python tests/distributed_worker.py SCENARIO OUT_DIR

Rank 0 writes its findings to OUT_DIR/SCENARIO.json; the test reads them. Scenarios:

equivalence   fit on 2 ranks (one bucket, then buckets of 1 KiB) vs fit in one process on the
              same global batches: parameters bitwise equal across ranks, and close to the
              single process's. 65 samples in batches of 8: the last global batch has one
              sample, so rank 1 joins that step with no data.
syncbn        a net with BatchNorm2d converted to SyncBatchNorm on 2 ranks vs BatchNorm2d in one
              process on the same global batches.
resume2       epoch 1 on 2 ranks with a checkpoint, then epoch 2 on 2 ranks from it.
resume1       epoch 2 in one process from resume2's checkpoint.
raise         rank 1 raises at its third batch: every rank must stop.
killed        rank 1 is killed (SIGKILL) at its third batch: mpiexec must stop the others.
hang          rank 1 sleeps instead of training: rank 0's collective times out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import fastconv
from fastconv import distributed as dist
from fastconv import nn, optim, train
from fastconv.data import ArrayDataset, DataLoader


def blobs(n, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.normal(0, 1.0, (n, channels, 8, 8)).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, :, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 0.5
    return ArrayDataset(images, labels)


def net(batchnorm=False, seed=0):
    fastconv.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)]
    return nn.Sequential(*layers)


def parameters(model) -> list[np.ndarray]:
    return [p.data.copy() for p in model.parameters()] + [b.copy() for b in model.buffers()]


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run_fit(model, data, epochs=2, distributed=True, batch_size=8, val=None, **options):
    optimizer = optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, seed=3)
    val_loader = None if val is None else DataLoader(val, batch_size=16)
    return train.fit(model, nn.CrossEntropyLoss(), optimizer, loader, val_loader,
                     epochs=epochs, progress=False, distributed=distributed, **options)


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b))


def equivalence(comm, out):
    data, val = blobs(65), blobs(37, seed=1)
    result = {}
    for name, bucket_mb in (("one_bucket", 4.0), ("small_buckets", 1.0 / 4096)):
        model = net()
        trainer = functools.partial(dist.DistributedTrainer, bucket_mb=bucket_mb)
        history = run_fit(model, data, val=val, trainer_class=trainer)
        mine = parameters(model)
        digests = comm.allgather(digest(mine))
        start = parameters(net())
        single = net()
        single_history = run_fit(single, data, val=val, distributed=False)
        result[name] = {
            "digests": digests,
            "max_difference": max_difference(mine, parameters(single)),
            "max_change": max_difference(mine, start),
            "train_loss": history["train_loss"], "single_train_loss": single_history["train_loss"],
            "val_accuracy": history["val_accuracy"], "val_loss": history["val_loss"],
            "single_val_accuracy": single_history["val_accuracy"],
            "single_val_loss": single_history["val_loss"],
        }
        probe = dist.GradientReducer(model.parameters(), comm, bucket_mb)
        result[name]["buckets"] = len(probe.buckets)
        probe.remove()
    result["threads"] = comm.allgather(fastconv.get_num_threads())
    return result


def syncbn(comm, out):
    data = blobs(64)
    model = dist.SyncBatchNorm.convert_sync_batchnorm(net(batchnorm=True))
    run_fit(model, data)
    mine = parameters(model)
    single = net(batchnorm=True)
    run_fit(single, data, distributed=False)
    return {"digests": comm.allgather(digest(mine)),
            "max_difference": max_difference(mine, parameters(single)),
            "converted": type(model[1]).__name__}


def resume2(comm, out):
    data = blobs(65)
    model = net()
    run_fit(model, data, epochs=1, checkpoint_path=out / "epoch1.npz")
    comm.Barrier()
    if comm.Get_rank() == 0:
        Path(out / "epoch1.npz").replace(out / "from2.npz")
    comm.Barrier()
    epoch1 = [a.tolist() for a in parameters(model)]
    model = net(seed=1)  # replaced by the checkpoint
    history = run_fit(model, data, epochs=2, resume=out / "from2.npz")
    return {"parameters": [a.tolist() for a in parameters(model)], "epochs": len(history),
            "epoch1": epoch1}


def resume1(comm, out):
    data = blobs(65)
    model = net(seed=1)
    history = run_fit(model, data, epochs=2, resume=out / "from2.npz")
    return {"parameters": [a.tolist() for a in parameters(model)], "epochs": len(history)}


class RaiseOnRank1(train.Callback):
    def on_batch_end(self, trainer, batch, logs):
        if dist.get_rank() == 1 and batch == 2:
            raise RuntimeError("rank 1 fails on purpose")


def raise_(comm, out):
    run_fit(net(), blobs(200), epochs=50, callbacks=[RaiseOnRank1()])
    return {"finished": True}


class KillRank1(train.Callback):
    def on_batch_end(self, trainer, batch, logs):
        if dist.get_rank() == 1 and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def killed(comm, out):
    run_fit(net(), blobs(200), epochs=50, callbacks=[KillRank1()])
    return {"finished": True}


def hang(comm, out):
    if comm.Get_rank() == 1:
        time.sleep(120)
        return None
    run_fit(net(), blobs(65), epochs=1)
    return {"finished": True}


def main() -> int:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    comm = dist.init()
    work = {"equivalence": equivalence, "syncbn": syncbn, "resume2": resume2,
            "resume1": resume1, "raise": raise_, "killed": killed, "hang": hang}[scenario]
    result = work(comm, out)
    if comm.Get_rank() == 0 and result is not None:
        result["world_size"] = comm.Get_size()
        (out / f"{scenario}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
