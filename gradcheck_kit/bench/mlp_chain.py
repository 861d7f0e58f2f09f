"""The whole MLP's backward with its three layers' backward passes plugged in: what every variant shares.

The linear layers and the tanh are taken back the same way in every variant
(exercise 4's training loop); what differs is how the loss, the batchnorm and the
embedding are. It holds no layer's backward of its own, so the sandboxed worker
that times a student's passes can run it without any of the reference solutions
(:mod:`gradcheck_kit.bench.variants`) in its memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["fused_backward", "mlp_backward"]


def mlp_backward(
    f: Any,
    dlogits_of: Callable[[Any], torch.Tensor],
    dhprebn_of: Callable[[Any, torch.Tensor], torch.Tensor],
    dC_of: Callable[[Any, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The parameters' gradients of the whole MLP, with the three layers' backward passes plugged in.

    The linear layers and the tanh are the same in every variant (exercise 4's
    training loop); what differs is how the loss, the batchnorm and the embedding
    are taken back.

    Args:
        f: the forward pass, by the notebook's names.
        dlogits_of: ``f -> dlogits``.
        dhprebn_of: ``(f, dhpreact) -> dhprebn``.
        dC_of: ``(f, demb) -> dC``.

    Returns:
        ``{"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": ..., "bnbias": ...}``.
    """
    dlogits = dlogits_of(f)
    dh = dlogits @ f.W2.T
    dW2 = f.h.T @ dlogits
    db2 = dlogits.sum(0)
    dhpreact = (1.0 - f.h**2) * dh
    dbngain = (f.bnraw * dhpreact).sum(0, keepdim=True)
    dbnbias = dhpreact.sum(0, keepdim=True)
    dhprebn = dhprebn_of(f, dhpreact)
    dembcat = dhprebn @ f.W1.T
    dW1 = f.embcat.T @ dhprebn
    db1 = dhprebn.sum(0)
    demb = dembcat.view(f.emb.shape)
    dC = dC_of(f, demb)
    return {"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": dbngain, "bnbias": dbnbias}


def fused_backward(
    f: Any,
    cross_entropy: Callable[..., torch.Tensor],
    batchnorm: Callable[..., torch.Tensor],
    embedding: Callable[..., torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The parameters' gradients with exercises 2-4's functions, called with their exercises' signatures.

    Args:
        f: the forward pass, by the notebook's names.
        cross_entropy: ``(logits, Yb) -> dlogits``.
        batchnorm: ``(dhpreact, bngain, bnraw, bnvar_inv) -> dhprebn``.
        embedding: ``(demb, Xb, num_embeddings) -> dC``.
    """
    return mlp_backward(
        f,
        lambda f: cross_entropy(f.logits, f.Yb),
        lambda f, dhpreact: batchnorm(dhpreact, f.bngain, f.bnraw, f.bnvar_inv),
        lambda f, demb: embedding(demb, f.Xb, f.C.shape[0]),
    )
