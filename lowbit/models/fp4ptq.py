"""FP4 post-training quantization (weights only, fake-quant) of a model's ``nn.Linear`` layers.

Each selected weight ``W [out, in]`` is replaced by ``fp4_fakequant(W, fmt)`` from ``sim.numerics.mx``
(the golden model, bit for bit): blocks run along the **last axis = the input / reduction dimension**,
NVFP4 = 16 E2M1 elements + E4M3 block scale + per-tensor FP32 scale (docs/reference/numerics.md §3), MXFP4 = 32 E2M1
elements + E8M0 scale with the spec's FLOOR rule (docs/reference/numerics.md §2). Biases, embeddings, norms, the lm_head
and any unrecognised Linear (e.g. BERT's pooler) stay in full precision. Activations are not quantized
(weight-only PTQ, as in the component/block isolation of Cim et al., arXiv:2603.08747, docs/reference/numerics.md §6).

Component names (the seven projection types of the paper) and how module names map to them; a module is
recognised by ``<...>.(layers|layer|h|blocks).<block>.<suffix>`` with ``suffix`` exactly one of:

| component | LLaMA / Qwen2 / Mistral (HF)  | BitNet (models/bitnet.py) | BERT / MiniLM (HF)          |
|-----------|-------------------------------|---------------------------|-----------------------------|
| q         | ``self_attn.q_proj``          | ``attn.q``                | ``attention.self.query``    |
| k         | ``self_attn.k_proj``          | ``attn.k``                | ``attention.self.key``      |
| v         | ``self_attn.v_proj``          | ``attn.v``                | ``attention.self.value``    |
| o         | ``self_attn.o_proj``          | ``attn.o``                | ``attention.output.dense``  |
| gate      | ``mlp.gate_proj``             | ``ffn.gate``              | (none: BERT's FFN is ungated) |
| up        | ``mlp.up_proj``               | ``ffn.up``                | ``intermediate.dense``      |
| down      | ``mlp.down_proj``             | ``ffn.down``              | ``output.dense``            |

BERT's ``intermediate.dense`` (d -> 4d, GELU after it) plays the role of ``up`` and ``output.dense``
(4d -> d) the role of ``down``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lowbit.sim.errors import LowbitError
from lowbit.sim.numerics.mx import fp4_fakequant

FORMATS = ("nvfp4", "mxfp4")
COMPONENTS = ("q", "k", "v", "o", "gate", "up", "down")

SUFFIX_TO_COMPONENT: dict[str, str] = {
    # LLaMA family (transformers LlamaDecoderLayer, Qwen2, Mistral)
    "self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o",
    "mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down",
    # models/bitnet.py (op names of sim.workloads)
    "attn.q": "q", "attn.k": "k", "attn.v": "v", "attn.o": "o",
    "ffn.gate": "gate", "ffn.up": "up", "ffn.down": "down",
    # BERT family (transformers BertLayer; MiniLM)
    "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
    "attention.output.dense": "o", "intermediate.dense": "up", "output.dense": "down",
}
_BLOCK_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LinearSite:
    """A recognised projection: module name, block (layer) index, component type, the module."""

    name: str
    block: int
    component: str
    module: nn.Linear


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise LowbitError(f"unknown FP4 format '{fmt}'; use one of: {', '.join(FORMATS)}")
    return fmt


def classify(name: str) -> tuple[int, str] | None:
    """``(block, component)`` of a module name, or None if it is not one of the seven projections."""
    m = _BLOCK_RE.search(name)
    if not m:
        return None
    comp = SUFFIX_TO_COMPONENT.get(m.group(2))
    return (int(m.group(1)), comp) if comp else None


def find_linears(model: nn.Module) -> list[LinearSite]:
    """All recognised projection ``nn.Linear`` modules in ``named_modules`` order.

    Raises LowbitError if none is recognised (unsupported architecture).
    """
    sites = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            c = classify(name)
            if c:
                sites.append(LinearSite(name, c[0], c[1], mod))
    if not sites:
        raise LowbitError(f"{type(model).__name__}: no q/k/v/o/gate/up/down Linear layers recognised; "
                          "supported: LLaMA-style (q_proj..down_proj), BitNet (attn.q..ffn.down), BERT")
    return sites


def parse_components(spec: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """'q,k,up' (or an iterable) -> validated tuple; None / 'all' -> None (every component)."""
    if spec is None or spec == "all":
        return None
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [c for c in items if c not in COMPONENTS]
    if bad or not items:
        raise LowbitError(f"unknown component(s) {bad or spec!r}; use a comma list of {', '.join(COMPONENTS)}")
    return tuple(items)


def parse_blocks(spec: str | Iterable[int] | None) -> tuple[int, ...] | None:
    """'0,2-4' (or an iterable of ints) -> tuple of block indices; None / 'all' -> None (every block)."""
    if spec is None or spec == "all":
        return None
    if not isinstance(spec, str):
        return tuple(int(b) for b in spec)
    out: list[int] = []
    try:
        for part in spec.split(","):
            a, _, b = part.strip().partition("-")
            out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    except ValueError:
        raise LowbitError(f"bad block list {spec!r}; use e.g. '0,2-4'") from None
    return tuple(out)


def select(sites: list[LinearSite], components: Iterable[str] | None = None,
           blocks: Iterable[int] | None = None) -> list[LinearSite]:
    """Sites whose component is in ``components`` and block in ``blocks`` (None = all)."""
    cs = set(components) if components is not None else None
    bs = set(blocks) if blocks is not None else None
    if bs is not None:
        have = {s.block for s in sites}
        if not bs <= have:
            raise LowbitError(f"block(s) {sorted(bs - have)} do not exist; the model has blocks "
                              f"{min(have)}..{max(have)}")
    return [s for s in sites if (cs is None or s.component in cs) and (bs is None or s.block in bs)]


def fakequant_weight(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``sim.numerics.mx.fp4_fakequant`` of a weight (float32 numpy round trip), same dtype/device as ``w``."""
    check_format(fmt)
    q = fp4_fakequant(w.detach().to("cpu", torch.float32).numpy(), fmt)
    return torch.from_numpy(q).to(device=w.device, dtype=w.dtype)


def _check_float(site: LinearSite) -> None:
    if getattr(site.module, "quantized", False):
        raise LowbitError(f"{site.name} is a quantized BitLinear; set model.quantized = False before FP4 PTQ")


class WeightCache:
    """Memo of fake-quantized weights keyed by (module name, format) for repeated sensitivity sweeps."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, str], torch.Tensor] = {}

    def get(self, site: LinearSite, fmt: str) -> torch.Tensor:
        key = (site.name, fmt)
        if key not in self._d:
            self._d[key] = fakequant_weight(site.module.weight, fmt)
        return self._d[key]


@contextmanager
def fp4_weights(model: nn.Module, fmt: str, components: Iterable[str] | None = None,
                blocks: Iterable[int] | None = None, cache: WeightCache | None = None,
                sites: list[LinearSite] | None = None) -> Iterator[list[LinearSite]]:
    """Temporarily replace the selected weights by their FP4 fake-quant; restored on exit."""
    check_format(fmt)
    chosen = select(sites if sites is not None else find_linears(model), components, blocks)
    cache = cache or WeightCache()
    saved = []
    try:
        for s in chosen:
            _check_float(s)
            saved.append((s.module, s.module.weight.data))
            s.module.weight.data = cache.get(s, fmt)
        yield chosen
    finally:
        for mod, data in saved:
            mod.weight.data = data


def quantize_model_(model: nn.Module, fmt: str, components: Iterable[str] | None = None,
                    blocks: Iterable[int] | None = None) -> list[str]:
    """Permanently fake-quantize the selected weights in place; returns the module names touched."""
    check_format(fmt)
    chosen = select(find_linears(model), components, blocks)
    with torch.no_grad():
        for s in chosen:
            _check_float(s)
            s.module.weight.copy_(fakequant_weight(s.module.weight, fmt))
    return [s.name for s in chosen]
