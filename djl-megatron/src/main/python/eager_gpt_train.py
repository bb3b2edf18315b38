#!/usr/bin/env python3
"""PyTorch eager's training step on the model bench-train measures: the peer of `bench-train --vs-pytorch`.

GPT as pretrain-gpt builds it by default (Megatron's defaults): learned absolute positions, LayerNorm, biases,
GPT-2's tanh GELU, 4h MLP, causal attention, embeddings tied to the output layer, no dropout. One step is what
ours does: forward, cross-entropy, backward over --micro-batches micro-batches (gradients accumulate), clip at
1.0, AdamW (0.9, 0.999, 1e-8, weight decay 0.01 on matrices). bf16 is PyTorch's usual mixed precision: fp32
weights under torch.autocast('cpu', torch.bfloat16).

Prints one line of JSON: tokens_per_s, gflops (model FLOP/s, Megatron's formula as ours), matmul_gflops (a
2048^3 matmul in the run's dtype, same process), step_s, threads, torch.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, h, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)

    def forward(self, x):  # x [b, s, h]
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (t.view(b, s, self.heads, h // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(h // self.heads))
        mask = torch.ones(s, s, dtype=torch.bool).tril()
        scores = scores.float().masked_fill(~mask, float("-inf"))
        att = scores.softmax(-1).to(v.dtype) @ v  # [b, heads, s, d]
        x = x + self.proj(att.transpose(1, 2).reshape(b, s, h))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, layers, h, heads, seq, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, h)
        self.wpe = nn.Embedding(seq, h)
        self.blocks = nn.ModuleList(Block(h, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(h)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, labels):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))


def model_flops(layers, h, seq, vocab, rows):
    """Matmul FLOPs of forward + backward for `rows` sequences, counted as ours (ModelFlops.training)."""
    per_token = layers * (12.0 * h * h + 2.0 * seq * h) + h * vocab
    return 6.0 * rows * seq * per_token


def matmul_gflops(dtype, n=2048, reps=5):
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2.0 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--micro-batches", type=int, default=1)
    p.add_argument("--iters", type=int, default=4, help="timed steps after one warm-up step")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: keep torch's)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--profile", help="after the timed steps, one more step under torch's profiler, written to this "
                   "chrome://tracing file (not timed)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1234)
    model = Gpt(a.num_layers, a.hidden_size, a.num_attention_heads, a.seq_length, a.vocab_size)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    rest = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    shape = (a.micro_batch_size, a.seq_length + 1)

    def step():
        for _ in range(a.micro_batches):
            tokens = torch.randint(0, a.vocab_size, shape)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                loss = model(tokens[:, :-1], tokens[:, 1:]) / a.micro_batches
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    seconds = (time.perf_counter() - t0) / a.iters
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        prof.export_chrome_trace(a.profile)
    rows = a.micro_batch_size * a.micro_batches
    flops = model_flops(a.num_layers, a.hidden_size, a.seq_length, a.vocab_size, rows)
    print(json.dumps({
        "tokens_per_s": rows * a.seq_length / seconds,
        "gflops": flops / seconds / 1e9,
        "matmul_gflops": matmul_gflops(torch.bfloat16 if a.bf16 else torch.float32),
        "step_s": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
