"""The training loop, checkpoints, reference models, summary() and the fastconv command."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import models, nn, optim, train
from fastconv.data import ArrayDataset, DataLoader


def _blobs(n=96, classes=3, seed=0):
    """Images whose class is which quadrant is bright: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, 0, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 2.0
    return ArrayDataset(images, labels)


def _tiny_net(seed=0):
    fastconv.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 3))


def test_a_few_steps_reduce_the_loss():
    data = _blobs()
    model = _tiny_net()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x, y = data.images, data.labels
    with fastconv.no_grad():
        before = loss_fn(model(x), y).item()
    for _ in range(10):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    with fastconv.no_grad():
        after = loss_fn(model(x), y).item()
    assert after < 0.5 * before, (before, after)


def test_fit_history_files_and_accuracy(tmp_path):
    data = _blobs()
    loader = DataLoader(data, batch_size=16, shuffle=True, seed=0)
    val = DataLoader(_blobs(seed=1), batch_size=32)
    model = _tiny_net()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    history = train.fit(model, nn.CrossEntropyLoss(), optimizer, loader, val, epochs=4,
                        progress=False, history_path=tmp_path / "h.csv",
                        plot_path=tmp_path / "curves.png")
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    header = (tmp_path / "h.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= set(header)
    result = train.evaluate(model, val, nn.CrossEntropyLoss())
    assert result["samples"] == 96
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (tmp_path / "curves.png").exists()
    else:
        assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_resume_gives_the_same_next_epoch(tmp_path):
    """Two epochs straight == one epoch, save, resume in a fresh process state, one more."""
    def run(epochs, resume=None, checkpoint=None):
        model = _tiny_net(seed=3)
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        loader = DataLoader(_blobs(), batch_size=16, shuffle=True, seed=5, prefetch=0)
        history = train.fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs=epochs,
                            scheduler=scheduler, progress=False, checkpoint_path=checkpoint,
                            resume=resume)
        return model, optimizer, history

    straight, _, h2 = run(2)
    run(1, checkpoint=tmp_path / "ckpt.npz")
    resumed, optimizer, h_resumed = run(2, resume=tmp_path / "ckpt.npz")
    assert [e["epoch"] for e in h_resumed.epochs] == [1, 2]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.25)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-7, err_msg=name)


def test_checkpoint_rejects_other_files(tmp_path):
    bad = tmp_path / "not_a_checkpoint.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not_a_checkpoint"):
        train.load_checkpoint(bad, _tiny_net())
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="garbage"):
        train.load_checkpoint(garbage, _tiny_net())


def test_early_stopping_stops_and_restores_best():
    class FakeTrainer:
        def __init__(self, model):
            self.model, self.stop = model, False

    model = _tiny_net()
    stopper = train.EarlyStopping(monitor="val_loss", patience=1)
    trainer = FakeTrainer(model)
    best = model.state_dict()
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.8]):
        if epoch == 1:
            best = model.state_dict()
        else:
            model[0].weight.data += 1.0  # weights drift after the best epoch
        stopper.on_epoch_end(trainer, epoch, {"val_loss": loss})
        if trainer.stop:
            break
    assert trainer.stop and stopper.stopped_epoch == 3
    stopper.on_train_end(trainer)
    np.testing.assert_array_equal(model[0].weight.data, best["0.weight"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fit_raises_on_a_diverging_loss():
    data = _blobs()
    model = _tiny_net()
    optimizer = optim.SGD(model.parameters(), lr=1e6)
    loader = DataLoader(data, batch_size=96)
    with pytest.raises(FloatingPointError, match="epoch"):
        train.fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs=20, progress=False)


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_models_build_and_classify(name, channels, size):
    model = models.build(name, channels, 7, size)
    x = np.random.default_rng(0).standard_normal((2, channels, size, size)).astype(np.float32)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_cnn_matches_the_issue_architecture():
    model = models.small_cnn(3, 10, 32)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 256), (256, 10)]
    convs = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(3, 32), (32, 32), (32, 64), (64, 64)]


def test_summary_counts_parameters_shapes_and_flops():
    model = models.lenet(1, 10, 28)
    lines = []
    result = fastconv.summary(model, (1, 1, 28, 28), print_fn=lines.append)
    assert result["parameters"] == sum(p.numel() for p in model.parameters()) == 61706
    text = lines[0]
    assert "(1, 6, 28, 28)" in text and "(1, 16, 10, 10)" in text and "(1, 10)" in text
    conv1 = result["layers"][0]
    assert conv1[1] == "Conv2d" and conv1[4] == 2 * 6 * 28 * 28 * 25 + 6 * 28 * 28
    # the model's own forward is back in place after summary
    assert "forward" not in model[0].__dict__


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def _run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_train_and_predict_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    Image = pytest.importorskip("PIL.Image")
    out = tmp_path / "run"
    proc = _run_cli("train", "--epochs", "2", "--no-progress", "--output-dir", str(out),
                    "--threads", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    accuracy = float(proc.stdout.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.8, proc.stdout
    for name in ("model.npz", "checkpoint.npz", "history.csv", "history.json"):
        assert (out / name).exists(), name
    assert len(json.loads((out / "history.json").read_text())) == 2

    # a digit drawn as an image file: predict prints a class for it
    from sklearn.datasets import load_digits
    digits = load_digits()
    pixels = (digits.images[0] / 16 * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    proc = _run_cli("predict", str(out / "model.npz"), str(tmp_path / "digit.png"), "--top", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(str(tmp_path / "digit.png") + ": ")
    assert proc.stdout.count("(") == 2


def test_cli_bad_arguments_fail_clearly(tmp_path):
    proc = _run_cli("train", "--dataset", "nosuchset")
    assert proc.returncode == 2 and "nosuchset" in proc.stderr
    proc = _run_cli("train", "--dataset", "mnist")
    assert proc.returncode != 0 and "PATH" in proc.stderr
    proc = _run_cli("train", "--dataset", "mnist", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "missing" in proc.stderr
    proc = _run_cli("predict", str(tmp_path / "nomodel.npz"), "x.png")
    assert proc.returncode == 2 and "nomodel.npz" in proc.stderr


def test_cli_train_without_scikit_learn_names_the_extra(tmp_path):
    """With sklearn hidden, `fastconv train` says in one line which extra to install."""
    code = ("import sys; sys.modules['sklearn'] = None; sys.modules['sklearn.datasets'] = None\n"
            "from fastconv.cli import main\n"
            f"sys.exit(main(['train', '--output-dir', {str(tmp_path)!r}, '--no-progress']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1 and "fastconv[datasets]" in message[0], proc.stderr
