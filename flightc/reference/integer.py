"""The integer reference: the compressed model in plain numpy with the datapath's exact numerics.

It walks the integer graph IR op by op (no tiling, no instructions, no packed bytes), so it is the
independent answer the functional simulator, the RTL and the board must reproduce byte for byte.
With ``device`` set, the linear layers' products run in PyTorch on that device (CUDA for a 7B model)
in float64, which is exact here (see :class:`TorchProducts`); everything else stays in numpy.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flightc import numerics as nm
from flightc.errors import UnsupportedError
from flightc.ir.graph import GraphIR, OpKind, Stage, interpret
from flightc.isa.table import OutMode


class NumpyProducts:
    """``x @ W.T`` in int64 numpy: the weights as int64, the exact definition (8 bytes per weight)."""

    def __init__(self, graph: GraphIR):
        self.w = {n: graph.node(n)["qweight"].int8_operand().astype(np.int64) for n in graph.linears()}

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64) @ self.w[name].T


class TorchProducts:
    """``x @ W.T`` in PyTorch on ``device``: the INT8 operands kept as int8 (1 byte per weight) and widened to
    float64 per product. Exact: every product of two INT8 values is an integer of magnitude at most 2^14 and
    every partial sum at most K * 2^14, far below 2^53 for any K a model has, so float64 holds each partial
    sum exactly whatever order the library adds them in (checked at construction)."""

    def __init__(self, graph: GraphIR, device: str):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.w = {}
        names = graph.linears()
        for n in names:
            k = graph.node(n)["qweight"].shape[1]
            if k * 2**14 >= 2**53:
                raise UnsupportedError(f"{n}: K = {k} is too long for exact float64 products; use the numpy "
                                       f"integer reference (device=None)")
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # widening a 7B model's weights takes a while
            for n, w8 in zip(names, pool.map(lambda n: graph.node(n)["qweight"].int8_operand(), names)):
                self.w[n] = torch.from_numpy(np.ascontiguousarray(w8)).to(self.device)

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        t = self.torch
        xs = t.from_numpy(np.ascontiguousarray(x, np.float64)).to(self.device)
        acc = xs @ self.w[name].to(t.float64).T
        return acc.cpu().numpy().astype(np.int64)


class IntegerModel:
    """Greedy-decoding state of one sequence: KV caches and the next position.

    ``device=None`` computes everything in numpy (int64 products); ``device="cuda"`` (or ``"cpu"``) runs
    the linear layers' products in PyTorch there (:class:`TorchProducts`), with the same results bit for bit.
    """

    def __init__(self, graph: GraphIR, max_len: int, device: str | None = None, masks=None):
        """``masks``: block-sparse attention masks (flightc.compress.block_mask.BlockMasks), a layer per attention
        node in graph order, applied to every softmax (None: dense)."""
        if graph.stage not in (Stage.INTEGER, Stage.FUSED):
            raise ValueError(f"integer reference needs an integerized graph, got stage {graph.stage.value!r}")
        self.graph = graph
        self.max_len = max_len
        s = graph.spec
        width = s.num_kv_heads * s.head_dim
        self.k_cache = {n: np.zeros((max_len, width), np.int8) for n in graph.nodes_of(OpKind.ATTENTION)}
        self.v_cache = {n: np.zeros((max_len, width), np.int8) for n in graph.nodes_of(OpKind.ATTENTION)}
        self.products = NumpyProducts(graph) if device is None else TorchProducts(graph, device)
        self.pos = 0
        self.masks = masks
        self.layer_of = {n: i for i, n in enumerate(graph.nodes_of(OpKind.ATTENTION))}
        if masks is not None and (masks.keep.shape[:2] != (len(self.layer_of), s.num_heads)
                                  or masks.blocks * masks.block < max_len):
            raise UnsupportedError(f"block masks of {masks.keep.shape[0]} layers x {masks.keep.shape[1]} heads x "
                                   f"{masks.blocks * masks.block} positions for a model of {len(self.layer_of)} x "
                                   f"{s.num_heads} at max_len {max_len}")

    def forward(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Feed tokens at the next positions; returns the INT32 logits of the last one."""
        return self.forward_all(ids)[-1]

    def forward_all(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Feed tokens at the next positions; returns the INT32 logits of every one of them [L, vocab]."""
        ids = np.asarray(ids, np.int64)
        L, p0 = len(ids), self.pos
        if p0 + L > self.max_len:
            raise UnsupportedError(f"sequence length {p0 + L} exceeds max_len {self.max_len}")
        g, s = self.graph, self.graph.spec
        if L and (ids.min() < 0 or ids.max() >= s.vocab_size):
            raise UnsupportedError(f"token id {int(ids.max() if ids.max() >= s.vocab_size else ids.min())} is "
                                   f"outside the model's vocabulary (0 to {s.vocab_size - 1})")
        self._rope = (nm.rope_table(np.arange(p0, p0 + L), s.head_dim, s.rope_theta, s.rope_scaling)
                      if s.rope_theta else None)
        def embed(_, n):
            res = nm.deq(n["qembed"].q[ids], *n["deq"])
            if "qpositions" in n:
                rows = np.arange(p0, p0 + L) + s.position_offset
                res = nm.deq_add(res, n["qpositions"].q[rows], *n["pos_deq"])
            return res

        val = interpret(g, {
            OpKind.EMBED: embed,
            OpKind.RMSNORM: lambda _, n, x: nm.rmsnorm(x, n["gain"], n["eps_q"], n["norm_shift"]),
            OpKind.LAYERNORM: lambda _, n, x: nm.layernorm(x, n["gain"], n["beta_q"], n["eps_q"], n["norm_shift"]),
            OpKind.LINEAR: self._linear,
            OpKind.ROPE: lambda _, n, x: nm.rope(x, *self._rope, s.head_dim),
            OpKind.ATTENTION: lambda name, n, q, k, v: self._attention(name, n, q, k, v, p0),
            OpKind.SILU: lambda _, n, x: n["lut"][x.astype(np.int64) + 128],
            OpKind.GELU_TANH: lambda _, n, x: n["lut"][x.astype(np.int64) + 128],
            OpKind.RELU: lambda _, n, x: n["lut"][x.astype(np.int64) + 128],
            OpKind.MUL: lambda _, n, a, b: nm.emul(a, b, *n["emul"]),
            OpKind.ADD: lambda _, n, res, delta: nm.sat_i32(res.astype(np.int64) + delta),
        })
        self.pos += L
        return val[g.output].astype(np.int32)

    def _linear(self, name: str, n: dict, x: np.ndarray) -> np.ndarray:
        """REQ_ADD yields the requantized (unsaturated) delta that the ADD node adds to the residual. A fused
        graph's linear applies its fused activation LUT and RoPE (pass ``fuse``) as the unfused nodes would."""
        acc = self.products(name, x) + n["bias_q"]
        mode = n["out_mode"]
        if mode is OutMode.REQ_I8:
            y = nm.mpe_requant_i8(acc, n["mult"], n["shift"], n.get("lut"))
            return nm.rope(y, *self._rope, self.graph.spec.head_dim) if n.get("rope") else y
        if mode is OutMode.REQ_ADD:
            return nm.requantize(acc, n["mult"], n["shift"])
        return nm.sat_i32(nm.requantize(acc, n["mult"], n["shift"]))

    def _attention(self, name: str, n: dict, q: np.ndarray, k: np.ndarray, v: np.ndarray, p0: int) -> np.ndarray:
        s = self.graph.spec
        L, d = q.shape[0], s.head_dim
        C = p0 + L
        if n.get("kv_bits", 8) == 4:  # what ST.pack4 keeps
            k, v = nm.sat_i4(k), nm.sat_i4(v)
        self.k_cache[name][p0:C] = k
        self.v_cache[name][p0:C] = v
        out = np.zeros((L, s.num_heads * d), np.int8)
        pv_mult, pv_shift = n["pv"]
        keep = None
        if self.masks is not None:
            keep = self.masks.token_mask(self.layer_of[name], C, p0)
        for h in range(s.num_heads):
            j = h // s.kv_group
            kh = self.k_cache[name][:C, j * d:(j + 1) * d].astype(np.int64)
            vh = self.v_cache[name][:C, j * d:(j + 1) * d].astype(np.int64)
            scores = q[:, h * d:(h + 1) * d].astype(np.int64) @ kh.T
            p = nm.softmax(scores, *n["softmax"], offset=p0, window=s.sliding_window,
                           keep=None if keep is None else keep[h])
            acc = p.astype(np.int64) @ vh
            out[:, h * d:(h + 1) * d] = nm.sat_i8(nm.requantize(acc, pv_mult, pv_shift))
        return out


def greedy(model: IntegerModel, prompt: list[int], max_new_tokens: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy generation; ties in the INT32 logits go to the lowest token id (np.argmax)."""
    logits = [model.forward(prompt)]
    tokens: list[int] = []
    for i in range(max_new_tokens):
        tokens.append(int(np.argmax(logits[-1])))
        if i + 1 < max_new_tokens:
            logits.append(model.forward([tokens[-1]]))
    return tokens, logits
