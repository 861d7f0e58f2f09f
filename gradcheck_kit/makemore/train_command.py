"""``gradcheck-kit train``: train the deep MLP with an implementation's own backward pass and report its health.

The implementation is a folder holding ``ex5_layers.py`` (the layers) and
``ex6_training.py`` (``train_step`` and ``calibrate``), such as ``exercises/``
or ``solutions/``; ``--impl autograd`` trains the reference layers with
``loss.backward()`` instead, for comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["AUTOGRAD", "add_arguments", "main", "run"]

AUTOGRAD = "autograd"
"""The ``--impl`` value that trains the reference layers with autograd."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``gradcheck-kit train`` to ``parser``."""
    parser.add_argument(
        "--impl",
        default="exercises",
        metavar="DIR",
        help="folder with ex5_layers.py and ex6_training.py, or 'autograd' for the reference (default: exercises)",
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default: 1000)")
    parser.add_argument("--data", metavar="PATH", help="names file, one name per line (default: the shipped names)")
    parser.add_argument("--plot", metavar="DIR", help="write the diagnostic figures as PNG files into DIR")
    parser.add_argument("--seed", type=int, default=2147483647, help="seed of the init and the minibatches")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
    parser.add_argument("--decay-at", type=int, metavar="STEP", help="divide the learning rate by 10 from this step on")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch rows (default: 32)")
    parser.add_argument("--n-hidden", type=int, default=100, help="width of each hidden block (default: 100)")
    parser.add_argument("--n-embd", type=int, default=10, help="width of a character embedding (default: 10)")
    parser.add_argument("--samples", type=int, default=10, help="names to sample after training (default: 10)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; the matrices are small, so one is fastest (default: 1)"
    )


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _where(error: BaseException, folder: Path) -> str:
    """`` (at ex5_layers.py:42)``: the innermost line of the implementation in the traceback."""
    import traceback

    inside = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve().parent == folder]
    return f" (at {Path(inside[-1].filename).name}:{inside[-1].lineno})" if inside else ""


def _implementation(impl: str, data: Any, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(model, step, calibrate)`` for ``--impl``; calibrate is None where the library's is used."""
    from gradcheck_kit.makemore import training
    from gradcheck_kit.sandbox.loading import load_module

    sizes = dict(vocab_size=data.vocab_size, n_embd=args.n_embd, n_hidden=args.n_hidden, block_size=data.block_size)
    if impl == AUTOGRAD:
        from gradcheck_kit.makemore import layers as reference

        model = training.autograd_twin(training.build_mlp(reference, seed=args.seed, **sizes))
        return model, training.autograd_step, None
    folder = Path(impl)
    paths = [folder / "ex5_layers.py", folder / "ex6_training.py"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --impl takes a folder with ex5_layers.py and ex6_training.py")
    layers, steps = (load_module(path) for path in paths)
    model = training.build_mlp(layers, seed=args.seed, **sizes)
    return model, steps.train_step, getattr(steps, "calibrate", None)


def run(args: argparse.Namespace) -> int:
    """Train, then print the losses, samples and diagnostics; write figures with ``--plot``.

    Progress goes to stdout every tenth of the run; errors go to stderr.

    Returns:
        0 when training finished; 1 when the implementation is not started or
        raised; 2 for a usage error (a missing folder or names file, a bad names
        file, matplotlib missing for ``--plot``).
    """
    if args.steps < 1 or args.batch_size < 2:
        _error("--steps must be at least 1 and --batch-size at least 2")
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from gradcheck_kit.makemore.health import PLOTS_HINT

            _error(f"--plot: {PLOTS_HINT}")
            return 2

    import torch

    from gradcheck_kit.makemore import training
    from gradcheck_kit.makemore.health import measure
    from gradcheck_kit.makemore.names import load_dataset

    torch.set_num_threads(max(1, args.threads))
    try:
        data = load_dataset(args.data)
    except (OSError, ValueError) as error:
        _error(str(error))
        return 2
    folder = Path(args.impl).resolve()
    try:
        model, step, calibrate = _implementation(args.impl, data, args)
    except FileNotFoundError as error:
        _error(str(error))
        return 2
    except NotImplementedError as error:
        _error(f"not started: {error}")
        return 1
    except Exception as error:  # noqa: BLE001 - a student's module can raise anything at import
        _error(f"{type(error).__name__}: {error}{_where(error, folder)}")
        return 1

    _say(
        f"data: {data.source}: {len(data.Xtr)} train / {len(data.Xdev)} dev / {len(data.Xte)} test examples, "
        f"vocabulary {data.vocab_size}"
    )
    n_params = sum(p.nelement() for p in model.parameters())
    _say(f"model: {len(model.layers)} layers, {n_params} parameters; implementation: {args.impl}")

    def progress(i: int, total: int, loss: float, seconds: float) -> None:
        _say(f"step {i:>{len(str(total))}}/{total}  loss {loss:.4f}  ({seconds:.1f} s)")

    try:
        log = training.train(
            model,
            step,
            data.Xtr,
            data.Ytr,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            decay_at=args.decay_at,
            seed=args.seed,
            progress=progress,
        )
        Xb, Yb = next(training.batches(data.Xtr, data.Ytr, 1, args.batch_size, args.seed + 1))
        health = measure(model, Xb, Yb, log)
        if calibrate is None:
            training.calibrate_batchnorm(model, data.Xtr)
        else:
            with torch.no_grad():
                calibrate(model.C, model.layers, data.Xtr)
            model.set_training(False)
        train_loss = training.split_loss(model, data.Xtr, data.Ytr)
        dev_loss = training.split_loss(model, data.Xdev, data.Ydev)
        names = training.sample(model, data.itos, count=args.samples, block_size=data.block_size)
    except NotImplementedError as error:
        _error(f"not started: {error}")
        return 1
    except Exception as error:  # noqa: BLE001 - a student's code can raise anything
        _error(f"{type(error).__name__}: {error}{_where(error, folder)}")
        return 1

    _say()
    _say(
        f"after {args.steps} steps ({log.seconds:.1f} s), batchnorm calibrated on the training set: "
        f"train loss {train_loss:.4f}, dev loss {dev_loss:.4f}"
    )
    if names:
        _say("samples: " + ", ".join(names))
    _say()
    _say(health.to_text())
    if args.plot:
        paths = health.plot(args.plot)
        _say()
        _say("figures: " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``gradcheck-kit train`` on its own."""
    parser = argparse.ArgumentParser(prog="gradcheck-kit train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
