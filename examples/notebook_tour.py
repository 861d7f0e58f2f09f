"""The backprop-ninja notebook's workflow with gradcheck-kit: record, backprop by hand, check.

Run: python examples/notebook_tour.py. In Jupyter, the same cells show the last cmp() and
rec.check(loss) as HTML, once each.
"""

import torch

import gradcheck_kit
from gradcheck_kit import cmp, compare

g = torch.Generator().manual_seed(2147483647)
n, vocab_size, block_size, n_embd, n_hidden = 32, 27, 3, 10, 64
C = torch.randn((vocab_size, n_embd), generator=g)
W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5 / 3) / (n_embd * block_size) ** 0.5
b1 = torch.randn(n_hidden, generator=g) * 0.1
W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
b2 = torch.randn(vocab_size, generator=g) * 0.1
bngain = torch.randn((1, n_hidden), generator=g) * 0.1 + 1.0
bnbias = torch.randn((1, n_hidden), generator=g) * 0.1
for p in (C, W1, b1, W2, b2, bngain, bnbias):
    p.requires_grad = True
Xb = torch.randint(0, vocab_size, (n, block_size), generator=g)
Yb = torch.randint(0, vocab_size, (n,), generator=g)

# The forward pass exactly as in the notebook; no retain_grad() list needed.
with gradcheck_kit.record() as rec:
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1 / (n - 1) * (bndiff2).sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()

rec.retain_grad()
loss.backward()

# A few steps by hand, one of them with the classic missing keepdim.
dlogprobs = torch.zeros_like(logprobs)
dlogprobs[range(n), Yb] = -1.0 / n
dprobs = (1.0 / probs) * dlogprobs
dcounts_sum_inv = (counts * dprobs).sum(1)  # should be .sum(1, keepdim=True)
dcounts_sum = (-(counts_sum**-2)) * dcounts_sum_inv

print("The notebook's cmp, with shapes checked:")
cmp("logprobs", dlogprobs, logprobs)
cmp("probs", dprobs, probs)
print(cmp("counts_sum_inv", dcounts_sum_inv, counts_sum_inv).message)
print()
print("cmp compares with t.grad, as the notebook's does; a reference gradient itself goes to compare:")
try:
    cmp("probs", dprobs, probs.grad.clone())
except ValueError as error:
    print(f"{type(error).__name__}: {error}")
print(compare("probs", dprobs, rec.grads(loss)["probs"]))
print()
print("Every recorded tensor at once:")
report = rec.check(loss)  # printed here; in a notebook the cell shows the returned report instead
