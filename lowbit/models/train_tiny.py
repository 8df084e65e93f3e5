"""Train a tiny ternary (BitNet b1.58 QAT) byte-level causal LM on the Python standard library's own source.

Data (design choice, so that the run needs nothing but a Python install): every ``*.py`` file under
``sysconfig.get_paths()["stdlib"]``, excluding ``site-packages`` and ``test``/``tests`` directories, sorted
by relative path. The split is **by file** and deterministic: a file is held out iff
``zlib.crc32(relpath) % 10 == 0`` (about 10% of files). Files are concatenated as raw bytes (vocabulary =
the 256 byte values), separated by a blank line. The stdlib differs between Python versions; the report
records the version used.

Model: :class:`lowbit.models.bitnet.BitNet` (the BitNet b1.58 model; ternary absmean weights and INT8
per-token activations in the forward pass, straight-through estimator in the backward pass) with the
shape :data:`TINY_SPEC`. The float baseline is the **same architecture trained from the same init, on the
same batches, for the same number of steps with quantization off** (``BitNet.quantized = False``).

Optimiser (assumption, not from the BitNet papers): AdamW (betas 0.9/0.95, weight decay 0.1), linear warmup
then cosine decay to 10% of the peak learning rate; gradient clipping at 1.0.

Reproducibility: a run is fixed by its step count and seed (initialisation, batch offsets), on one thread
with deterministic kernels, so its perplexities repeat exactly on the same software stack (a different
CPU instruction set may round float32 sums differently). Wall time never changes the schedule; the
optional time cap (`TrainConfig.minutes`) only stops a run early, which is then marked incomplete and
refused by the report writer (`write_accuracy_report`).

Checkpoints are written atomically (temp file, then ``os.replace``) to ``<out>/ternary.pt`` and
``<out>/float.pt``; each holds ``{"spec": dict, "quantized": bool, "state": state_dict, "meta": dict}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import sys
import sysconfig
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowbit.models.bitnet import BitNet
from lowbit.sim.atomic import atomic_write, atomic_write_via
from lowbit.sim.errors import LowbitError
from lowbit.sim.modelspec import ModelSpec

TINY_SPEC = ModelSpec(
    "stdlib-tiny", n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, d_ffn=384, vocab=256,
    ffn_act="relu2_glu", subln=True, norm_eps=1e-5, max_positions=256,
)
"""4 layers, d 128, 4 heads / 2 KV heads (GQA), ReLU^2 GLU FFN 384, SubLN (2B4T block), byte vocab."""

HELD_OUT_MOD = 10
SEPARATOR = b"\n\n"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch: int = 8
    seq: int = 256
    lr: float = 3e-3
    warmup: int = 40
    weight_decay: float = 0.1
    seed: int = 0
    minutes: float | None = None  # optional wall-clock guard for both runs together (ternary gets 60%)
    threads: int = 1  # 2 OpenMP threads ran 10x slower than 1 on a 2-core machine at load average 6-11
    train_bytes: int = 6_000_000


# ----------------------------------------------------------------------------- data


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """Sorted ``(relpath, path)`` of the stdlib's ``*.py`` files (no site-packages, no test dirs)."""
    root = root or stdlib_root()
    skip = {"site-packages", "dist-packages", "test", "tests", "__pycache__"}
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in skip]  # prune: never descend into site-packages
        for f in files:
            if f.endswith(".py"):
                p = Path(d) / f
                out.append((p.relative_to(root).as_posix(), p))
    out.sort()
    if not out:
        raise LowbitError(f"no *.py files found under the stdlib directory {root}; is this a full Python install?")
    return out


def is_held_out(relpath: str) -> bool:
    """Deterministic file-level split: held out iff ``crc32(relpath) % 10 == 0``."""
    return zlib.crc32(relpath.encode()) % HELD_OUT_MOD == 0


def load_corpus(split: str, max_bytes: int, root: Path | None = None) -> tuple[np.ndarray, int]:
    """Concatenated bytes (uint8) of the ``train`` or ``heldout`` files, in path order, up to max_bytes.

    Returns (tokens, number of files used).
    """
    if split not in ("train", "heldout"):
        raise ValueError(split)
    chunks, n, used = [], 0, 0
    for rel, p in stdlib_files(root):
        if is_held_out(rel) != (split == "heldout"):
            continue
        b = p.read_bytes() + SEPARATOR
        chunks.append(b)
        n += len(b)
        used += 1
        if n >= max_bytes:
            break
    data = np.frombuffer(b"".join(chunks)[:max_bytes], dtype=np.uint8)
    return data, used


# ----------------------------------------------------------------------------- training


def _lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Warmup, then cosine to 10% over `total` steps (a function of the step only)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _batches(data: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    """All training batch start offsets, drawn once from the seed (same batches for both runs)."""
    g = np.random.default_rng(cfg.seed)
    return torch.from_numpy(g.integers(0, len(data) - cfg.seq - 1, size=(cfg.steps, cfg.batch)))


def train_one(spec: ModelSpec, quantized: bool, data: np.ndarray, cfg: TrainConfig, time_cap_s: float | None,
              log=print, n_steps: int | None = None) -> tuple[BitNet, dict]:
    """Train one model for ``n_steps`` (default ``cfg.steps``) of the ``cfg.steps`` schedule; stops early
    (``complete`` false in the returned stats) if ``time_cap_s`` is given and exceeded."""
    torch.manual_seed(cfg.seed)
    model = BitNet(spec)
    model.quantized = quantized
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    tokens = torch.from_numpy(data.astype(np.int64))
    offs = _batches(data, cfg)
    ar = torch.arange(cfg.seq + 1)
    t0 = time.perf_counter()
    losses: list[float] = []
    step = 0
    n_steps = cfg.steps if n_steps is None else min(n_steps, cfg.steps)
    for step in range(n_steps):
        lr = _lr_at(step, cfg, n_steps)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        xy = tokens[offs[step][:, None] + ar]
        logits = model(xy[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, spec.vocab), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        el = time.perf_counter() - t0
        if step % 50 == 0 or step == n_steps - 1:
            log(f"[{'ternary' if quantized else 'float'}] step {step}/{n_steps} loss {np.mean(losses[-50:]):.3f} "
                f"{el:.0f}s")
        if time_cap_s is not None and el > time_cap_s and step < n_steps - 1:
            log(f"[{'ternary' if quantized else 'float'}] time cap {time_cap_s:.0f}s reached at step {step}")
            break
    stats = {"quantized": quantized, "steps_done": step + 1, "steps_planned": n_steps,
             "complete": step + 1 == n_steps,
             "train_seconds": round(time.perf_counter() - t0, 1), "final_train_loss": float(np.mean(losses[-50:])),
             "tokens_seen": (step + 1) * cfg.batch * cfg.seq}
    return model, stats


def save_checkpoint(path: Path, model: BitNet, meta: dict) -> None:
    """Atomic torch.save: write a temp file in the same directory, then rename."""
    obj = {"spec": dataclasses.asdict(model.spec), "quantized": model.quantized,
           "state": model.state_dict(), "meta": meta}
    atomic_write_via(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> BitNet:
    """Load a checkpoint written by :func:`save_checkpoint` (BitNet with its ``quantized`` flag restored)."""
    path = Path(path)
    if path.is_dir():
        path = path / "ternary.pt"
    if not path.is_file():
        raise LowbitError(f"checkpoint {path} not found; run `lowbit train-tiny --out DIR` first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        model = BitNet(ModelSpec(**obj["spec"]))
        model.load_state_dict(obj["state"])
    except (KeyError, RuntimeError, TypeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise LowbitError(f"checkpoint {path} is not a train-tiny checkpoint ({type(e).__name__}: {e})") from None
    model.quantized = bool(obj["quantized"])
    model.eval()
    return model


def write_json_atomic(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1))


def train_tiny(out: Path, cfg: TrainConfig, spec: ModelSpec = TINY_SPEC, float_baseline: bool = True,
               log=print) -> dict:
    """Train the ternary model (60% of the time cap, if any) then the float baseline (the rest); save both."""
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train_tiny(out, cfg, spec, float_baseline, log)
    finally:
        torch.use_deterministic_algorithms(det)


def _train_tiny(out: Path, cfg: TrainConfig, spec: ModelSpec, float_baseline: bool, log) -> dict:
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data, nfiles = load_corpus("train", cfg.train_bytes)
    if len(data) < cfg.seq + 2:
        raise LowbitError(f"training corpus too small ({len(data)} bytes) for --seq {cfg.seq}")
    meta = {"config": dataclasses.asdict(cfg), "python": sys.version.split()[0], "stdlib": str(stdlib_root()),
            "train_files": nfiles, "train_bytes": int(len(data)), "torch": torch.__version__}
    cap = cfg.minutes * 60.0 if cfg.minutes else None
    model, st = train_one(spec, True, data, cfg, (0.6 * cap if float_baseline else cap) if cap else None, log)
    meta["ternary"] = st
    save_checkpoint(out / "ternary.pt", model, meta)
    if float_baseline:
        left = max(cap - (time.perf_counter() - t0), 1.0) if cap else None
        # same schedule, batches and number of steps as the ternary run
        fmodel, fst = train_one(spec, False, data, cfg, left, log, n_steps=st["steps_done"])
        meta["float"] = fst
        save_checkpoint(out / "float.pt", fmodel, meta)
    meta["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out / "train.json", meta)
    return meta


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def perplexity(model: BitNet, ids: torch.Tensor, batch: int = 8) -> float:
    """exp(mean next-token cross entropy) over every position of every window of ``ids`` [N, T]."""
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, ids.shape[0], batch):
        x = ids[i:i + batch]
        logits = model(x[:, :-1]).double()
        tot += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"))
        n += x[:, 1:].numel()
    return math.exp(tot / n)


def heldout_windows(windows: int, seq: int) -> torch.Tensor:
    data, _ = load_corpus("heldout", windows * seq)
    n = len(data) // seq
    if n == 0:
        raise LowbitError("held-out corpus is empty")
    return torch.from_numpy(data[: n * seq].astype(np.int64)).reshape(n, seq)


def evaluate_tiny(ckpt_dir: Path, ks: tuple[int, ...] = (8, 16, 32, 64, 128), windows: int = 32,
                  log=print, oracle_ks: tuple[int, ...] = (8, 16, 32)) -> dict:
    """Held-out perplexity of the float and ternary checkpoints, ternary + LOP top-K, float + FP4 weights."""
    from lowbit.models.fp4ptq import quantize_model_
    from lowbit.models.lop_attention import LopAttention

    ckpt_dir = Path(ckpt_dir)
    t0 = time.perf_counter()
    tern = load_checkpoint(ckpt_dir / "ternary.pt")
    seq = tern.spec.max_positions
    ids = heldout_windows(windows, seq)
    rows: list[dict] = []

    def add(name: str, model: BitNet, lop: LopAttention | None = None) -> None:
        t = time.perf_counter()
        ppl = perplexity(model, ids)
        row = {"config": name, "ppl": ppl, "seconds": round(time.perf_counter() - t, 1)}
        if lop is not None:  # read the counters only after the forward passes
            row.update(k=lop.k, kept_fraction=lop.kept_fraction, topk_recall=lop.recall)
        rows.append(row)
        log(f"{name}: ppl {ppl:.4f}" + (f" (kept {lop.kept_fraction:.3f} of visible keys, exact top-K recall "
                                        f"{lop.recall:.3f})" if lop else ""))

    add("ternary (W1.58 A8, QAT)", tern)
    for k in ks:
        lop = LopAttention(k=k)
        tern.attn_fn = lop
        add(f"ternary + LOP K={k}", tern, lop)
    for k in oracle_ks:  # same K, exact float top-K selection: separates LOP's ranking error from sparsity
        lop = LopAttention(k=k, oracle=True)
        tern.attn_fn = lop
        add(f"ternary + exact top-K K={k} (oracle)", tern, lop)
    for k in oracle_ks:  # the same, one selection per KV head: separates the GQA sharing from LOP's ranking
        lop = LopAttention(k=k, oracle=True, shared=True)
        tern.attn_fn = lop
        add(f"ternary + exact top-K K={k} per KV head (oracle)", tern, lop)
    tern.attn_fn = _sdpa()
    tern.quantized = False
    add("ternary checkpoint, quantization off (latent fp32 weights)", tern)
    fpath = ckpt_dir / "float.pt"
    if fpath.is_file():
        flt = load_checkpoint(fpath)
        add("float baseline (same arch, same steps)", flt)
        for fmt in ("nvfp4", "mxfp4"):
            f4 = load_checkpoint(fpath)
            names = quantize_model_(f4, fmt)
            add(f"float + {fmt.upper()} weights (all {len(names)} projections, PTQ)", f4)
        lop = LopAttention(k=32)
        flt.attn_fn = lop
        add("float + LOP K=32", flt, lop)
    res = {"windows": int(ids.shape[0]), "seq": int(seq), "tokens": int(ids[:, 1:].numel()), "rows": rows,
           "eval_seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(ckpt_dir / "eval.json", res)
    return res


def _sdpa():
    from lowbit.models.bitnet import sdpa_attention

    return sdpa_attention


# ----------------------------------------------------------------------------- report

REPORT_COMMAND = "python -m lowbit.models.train_tiny --out out/train-tiny --report reports/accuracy-tiny.md"


def _rel(v: float, ref: float) -> str:
    return f"{100 * (v / ref - 1):+.2f}%"


def write_accuracy_report(ckpt_dir: Path, path: Path, command: str = REPORT_COMMAND) -> str:
    """reports/accuracy-tiny.md from `<ckpt_dir>/train.json` and `eval.json` (refuses incomplete runs)."""
    ckpt_dir = Path(ckpt_dir)
    meta = json.loads((ckpt_dir / "train.json").read_text())
    ev = json.loads((ckpt_dir / "eval.json").read_text())
    t, f = meta["ternary"], meta.get("float")
    if not t.get("complete") or (f and not f.get("complete")):
        raise LowbitError(f"{ckpt_dir}: the training stopped at its time cap ({t['steps_done']} of "
                          f"{t['steps_planned']} steps); rerun without --minutes for a reproducible report")
    rows = ev["rows"]
    ppl = {r["config"]: r["ppl"] for r in rows}
    tern = ppl["ternary (W1.58 A8, QAT)"]
    flt = ppl.get("float baseline (same arch, same steps)")
    c = meta["config"]
    L = ["# Tiny ternary LM trained on the Python stdlib: held-out perplexity under ternary, LOP top-K and FP4", "",
         f"Generated by `{command}` (lowbit/models/train_tiny.py): trains both models, evaluates them and writes "
         "this file. Training is fixed by its step count and seed, so rerunning the command reproduces every "
         "number below on the same software stack.", "",
         "## Setup", "", "| item | value |", "|---|---|",
         "| model | `lowbit.models.bitnet.BitNet`, shape `TINY_SPEC` (lowbit/models/train_tiny.py): 4 layers, d 128, "
         "4 heads / 2 KV heads, FFN 384 (ReLU² GLU, SubLN), vocab 256 (bytes), context 256 |",
         "| ternary | QAT: ternary absmean weights per tensor + per-token INT8 absmax activations in every projection "
         "(exact integer forward, STE backward); lm_head and embedding fp32 |",
         "| float baseline | trained separately: same architecture, init seed, batches, LR schedule and steps, "
         "with `quantized = False` |",
         f"| data | every `*.py` of the Python {meta['python']} standard library (no site-packages, no test "
         f"dirs), split by file (`crc32(relpath) % 10 == 0` held out); training: first {meta['train_bytes']:,} "
         f"bytes of {meta['train_files']} train files; evaluation: {ev['windows']} held-out windows of "
         f"{ev['seq']} bytes = {ev['tokens']:,} predicted bytes |",
         f"| optimiser | AdamW (0.9, 0.95), weight decay {c['weight_decay']} on matrices, peak LR {c['lr']}, "
         f"{c['warmup']} warmup steps, cosine to 10%, grad clip 1.0, batch {c['batch']} × {c['seq']} bytes |",
         f"| budget | **{t['steps_done']} steps** (seed {c['seed']}), {t['tokens_seen']:,} training bytes seen; "
         f"{c['threads']} torch thread, deterministic algorithms |",
         "| perplexity | exp(mean next-byte cross entropy) over all positions of each window |", "",
         f"Measured time (not part of the results): training {t['train_seconds']:.0f} s ternary"
         + (f" + {f['train_seconds']:.0f} s float" if f else "") + f", evaluation {ev['eval_seconds']:.0f} s, "
         f"torch {meta['torch']}.", "",
         "## Results", "",
         "| configuration | held-out ppl (bytes) | vs its reference | keys kept | exact top-K recall |",
         "|---|---|---|---|---|"]
    for r in rows:
        name = r["config"]
        ref = flt if name.startswith("float") else tern
        rel = "reference" if name in ("ternary (W1.58 A8, QAT)", "float baseline (same arch, same steps)") else \
            _rel(r["ppl"], ref)
        if name.startswith("ternary (W1.58") and flt:
            rel += f" ({_rel(tern, flt)} vs float)"
        kept = f"{r['kept_fraction']:.3f}" if "kept_fraction" in r else ""
        rec = f"{r['topk_recall']:.3f}" if "topk_recall" in r else ""
        L.append(f"| {name} | {r['ppl']:.3f} | {rel} | {kept} | {rec} |")
    L += ["", "Keys kept: fraction of the causally visible (query, key) pairs attention used (a query at position "
          "i < K keeps all its keys). Exact top-K recall: fraction of the kept keys that are also in the exact "
          "top-K by float q·k of its query head. LOP: q and k quantized to INT8 per token per head, leading-one "
          "surrogate scores, 63 buckets, the comparison-free top-K of `lowbit.sim.numerics.lop` (the test suite "
          "checks the PyTorch selection against it); the survivors' scores and the softmax stay float. "
          f"GQA ({TINY_SPEC.n_heads} query heads on {TINY_SPEC.n_kv_heads} KV heads): K counts keys per KV head, selected once over its query heads' summed scores "
          "(`lop_group_topk`, the rule the chip's static program and the GPU kernel share), so a query head keeps "
          "the same K keys as its group partners, not its own top K; the 'per KV head (oracle)' rows take that "
          "shared selection from exact float scores, which separates the cost of sharing from LOP's ranking "
          "error.", "",
          "## Caveats", "",
          f"- The model is tiny and undertrained ({t['steps_done']} steps); relative effects can change with a "
          "better-trained model, and LOP should hurt more at longer contexts.",
          f"- Evaluation uses {ev['tokens']:,} bytes from the first held-out files; all configurations see the "
          "same bytes (paired differences), but differences below ~0.2% should not be over-read.",
          "- The corpus is the installed Python's standard library: another Python version gives another "
          "corpus and other numbers.", ""]
    text = "\n".join(L)
    atomic_write(Path(path), text)
    return text


def main(argv: list[str] | None = None) -> None:
    """Train, evaluate and write the accuracy report (the command `make reports` runs)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", default="out/train-tiny", help="checkpoint directory")
    ap.add_argument("--report", default="reports/accuracy-tiny.md")
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    a = ap.parse_args(argv)
    out = Path(a.out)
    train_tiny(out, TrainConfig(steps=a.steps))
    evaluate_tiny(out)
    cmd = REPORT_COMMAND if a.steps == TrainConfig.steps else REPORT_COMMAND + f" --steps {a.steps}"
    write_accuracy_report(out, Path(a.report), cmd)
    print(f"wrote {a.report}")


if __name__ == "__main__":
    main()
