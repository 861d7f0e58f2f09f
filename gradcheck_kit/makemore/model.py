"""The makemore MLP of the backprop exercises: its parameters, a batch, and the recorded forward pass.

The forward pass is written exactly as in the notebook, one named intermediate a
line, and recorded, so every gradient the exercises ask for has an autograd
reference under the same name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from types import SimpleNamespace

import torch

from gradcheck_kit.recording.recording import Recording
from gradcheck_kit.recording.tracer import record

__all__ = ["GRADED", "PARAMETERS", "Config", "Forward", "build"]

#: The 26 gradients of exercise 1, in the order the notebook checks them.
GRADED: tuple[str, ...] = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes",
    "logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar",
    "bndiff2", "bndiff", "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C",
)  # fmt: skip

PARAMETERS: tuple[str, ...] = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")

#: Every name the forward pass defines, as the student's ``f`` exposes them.
FORWARD_NAMES: tuple[str, ...] = (
    *PARAMETERS, "Xb", "Yb", "n", "emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar",
    "bnvar_inv", "bnraw", "hpreact", "h", "logits", "logit_maxes", "norm_logits", "counts",
    "counts_sum", "counts_sum_inv", "probs", "logprobs", "loss",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Sizes, seed, dtype and device of one forward pass. The defaults are the notebook's."""

    n: int = 32
    block_size: int = 3
    n_embd: int = 10
    n_hidden: int = 64
    vocab_size: int = 27
    seed: int = 2147483647
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"batch size n={self.n}: the Bessel-corrected variance needs n >= 2")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype {self.dtype!r}: use 'float32' or 'float64'")

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


class Forward:
    """A recorded forward pass of the makemore MLP.

    Attributes carry the notebook's names (``fwd.logprobs``, ``fwd.W1``, ``fwd.Xb``);
    the tensors are the live ones of the recorded graph.
    """

    def __init__(self, config: Config, recording: Recording, batch: dict[str, torch.Tensor]) -> None:
        self.config = config
        self.recording = recording
        self.Xb = batch["Xb"]
        self.Yb = batch["Yb"]
        self.n = config.n

    def __getattr__(self, name: str) -> torch.Tensor:
        recording = self.__dict__.get("recording")
        if recording is not None and name in recording:
            return recording[name]
        raise AttributeError(f"the forward pass has no tensor named {name!r}")

    @cached_property
    def all_grads(self) -> dict[str, torch.Tensor | None]:
        """Autograd's gradient of the loss for every recorded tensor (None where it does not depend on it)."""
        return self.recording.grads(self.loss)

    @cached_property
    def reference_grads(self) -> dict[str, torch.Tensor]:
        """Autograd's gradient of the loss for each of the 26 graded names, in :data:`GRADED` order."""
        return {name: self.all_grads[name] for name in GRADED}  # type: ignore[misc]

    def student_view(self) -> SimpleNamespace:
        """Detached copies of everything the forward pass defines: what a student's code gets."""
        values = {}
        for name in FORWARD_NAMES:
            value = getattr(self, name)
            values[name] = value.detach().clone() if isinstance(value, torch.Tensor) else value
        return SimpleNamespace(**values)


def init_parameters(config: Config) -> dict[str, torch.Tensor]:
    """The notebook's initialisation, drawn on the CPU so every device grades the same numbers.

    The batchnorm gain and bias are drawn at random around 1 and 0 rather than set
    to exactly 1 and 0, so that a backward pass that forgets them does not pass by luck.
    """
    g = torch.Generator().manual_seed(config.seed)
    fan_in = config.n_embd * config.block_size
    params = {
        "C": torch.randn((config.vocab_size, config.n_embd), generator=g),
        "W1": torch.randn((fan_in, config.n_hidden), generator=g) * (5 / 3) / fan_in**0.5,
        "b1": torch.randn(config.n_hidden, generator=g) * 0.1,
        "W2": torch.randn((config.n_hidden, config.vocab_size), generator=g) * 0.1,
        "b2": torch.randn(config.vocab_size, generator=g) * 0.1,
        "bngain": torch.randn((1, config.n_hidden), generator=g) * 0.1 + 1.0,
        "bnbias": torch.randn((1, config.n_hidden), generator=g) * 0.1,
    }
    dtype = getattr(torch, config.dtype)
    return {name: p.to(device=config.device, dtype=dtype).requires_grad_() for name, p in params.items()}


def draw_batch(config: Config) -> dict[str, torch.Tensor]:
    """A batch of contexts and next characters, from its own seeded generator.

    The last index of the batch repeats the first, so that every batch has a row of
    C that is read twice, whatever its size: the case a scatter must accumulate.
    """
    g = torch.Generator().manual_seed(config.seed + 1)
    Xb = torch.randint(0, config.vocab_size, (config.n, config.block_size), generator=g)
    Xb[-1, -1] = Xb[0, 0]
    Yb = torch.randint(0, config.vocab_size, (config.n,), generator=g)
    return {"Xb": Xb.to(config.device), "Yb": Yb.to(config.device)}


def build(config: Config | None = None) -> Forward:
    """Run and record the notebook's forward pass at ``config``."""
    config = config or Config()
    p = init_parameters(config)
    batch = draw_batch(config)
    C, W1, b1, W2, b2, bngain, bnbias = (p[name] for name in PARAMETERS)
    Xb, Yb, n = batch["Xb"], batch["Yb"], config.n

    with record() as rec:
        emb = C[Xb]  # embed the characters into vectors
        embcat = emb.view(emb.shape[0], -1)  # concatenate the vectors
        # Linear layer 1
        hprebn = embcat @ W1 + b1  # hidden layer pre-activation
        # BatchNorm layer
        bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
        bndiff = hprebn - bnmeani
        bndiff2 = bndiff**2
        bnvar = 1 / (n - 1) * (bndiff2).sum(0, keepdim=True)  # Bessel's correction: n-1, not n
        bnvar_inv = (bnvar + 1e-5) ** -0.5
        bnraw = bndiff * bnvar_inv
        hpreact = bngain * bnraw + bnbias
        # Non-linearity
        h = torch.tanh(hpreact)  # hidden layer
        # Linear layer 2
        logits = h @ W2 + b2  # output layer
        # cross entropy loss (same as F.cross_entropy(logits, Yb))
        logit_maxes = logits.max(1, keepdim=True).values
        norm_logits = logits - logit_maxes  # subtract max for numerical stability
        counts = norm_logits.exp()
        counts_sum = counts.sum(1, keepdims=True)
        counts_sum_inv = counts_sum**-1
        probs = counts * counts_sum_inv
        logprobs = probs.log()
        loss = -logprobs[range(n), Yb].mean()  # noqa: F841 (recorded by name)

    missing = [name for name in (*GRADED, "loss") if name not in rec]
    assert not missing, f"the recorder lost {missing}"
    return Forward(config, rec, batch)
