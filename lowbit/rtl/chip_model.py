"""The chip data path's contents from the whole-model golden (lowbit.sim.golden, docs/golden.md): what the
loader (lowbit.rtl.chip_golden.data_plan) puts in the DRAM image and the act buffer, and the psum words it
expects, when a program compiled for a ternary model runs with that model's deployed weights.

- Weights: `deploy(spec, seeded_weights(spec, seed))` (lowbit.sim.golden_weights): a projection tile's row
  groups are the deployed codes of its op (the program's op name) at its rows, packed as the chip's DRAM
  layout has them (lowbit.rtl.chip_data.pack_tile, by row group). A tile's first row is its weight DMA's
  offset from the op's weights (the lowest address any of the op's weight DMAs reads: the tile of row 0)
  over the bytes of one row (k 2-bit codes).
- Activations: the golden's INT8 output of the quantize op that feeds the projection in that step
  (`INPUT_OF`: q/k/v read `attn_quant`, o `o_quant`, gate/up `ffn_quant`, down `down_quant`, the lm_head
  `lm_quant`; sim.workloads.layer_ops), token after token at the act buffer's start (chip_golden's DESIGN
  ASSUMPTION). No unit writes the act buffer on the chip yet: the bench writes these words through the
  act buffer's load port in the cycles of that quantize op's SFU instruction (one word a cycle from the
  cycle after the bench sees it start; the loader checks they end before the instruction does), standing
  in for the SFU's output stream.
- Expected psum words: the golden's accumulator buffer of the op and step (`layers.L.<op>.acc`, [T, out]),
  cut to the tile's rows and regrouped in the engine's write order (token, then row group of `lanes`
  accumulators; lanes past the matrix's last row read zero weights and hold 0); overflow flags 0 (the golden
  refuses a run whose accumulators overflow).
- The run: the program's model (its metadata), a prompt of `prefill` token ids from numpy's PCG64 seeded
  with [seed, 2], `decode` greedy steps, LOP as the program was compiled (lowbit.sim.golden.golden_run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.sim.golden import GoldenRun, golden_run
from lowbit.sim.golden_weights import Deployed, deploy, seeded_weights
from lowbit.sim.modelspec import ModelSpec

# The quantize op whose INT8 output each projection reads (sim.workloads.layer_ops' names, layer prefix cut)
INPUT_OF = {"attn.q": "attn_quant", "attn.k": "attn_quant", "attn.v": "attn_quant", "attn.o": "o_quant",
            "ffn.gate": "ffn_quant", "ffn.up": "ffn_quant", "ffn.down": "down_quant", "lm_head": "lm_quant"}


class NoMapping(Exception):
    """A program tile that has no place in the whole-model golden (the message says which and why). Not a user
    error: the bench falls back to seeded contents and prints the reason."""


def input_of(op: str) -> str:
    """The quantize op feeding projection `op` (`layers.1.ffn.down` -> `layers.1.down_quant`; '' if none)."""
    if op.startswith("layers."):
        parts = op.split(".")
        rest = ".".join(parts[2:])
        return f"layers.{parts[1]}.{INPUT_OF[rest]}" if rest in INPUT_OF else ""
    return INPUT_OF.get(op, "")


@dataclass
class ModelContents:
    """The golden run of a program's workload and the deployed weights it used (module docstring)."""

    spec: ModelSpec
    dep: Deployed
    run: GoldenRun
    seed: int
    base: dict[str, int]  # op -> DRAM byte address of its weights' first row

    def _lin(self, op: str, what: str):
        lin = self.dep.linears.get(op)
        if lin is None:
            raise NoMapping(f"{what}: op '{op}' is no projection of {self.spec.name}")
        if lin.fmt != "ternary":
            raise NoMapping(f"{what}: op '{op}' holds {lin.fmt} weights, not ternary row groups")
        return lin

    def first_row(self, op: str, addr: int, k: int, what: str) -> int:
        """The first weight row of a tile whose weights start at DRAM byte `addr` (k 2-bit codes a row)."""
        lin = self._lin(op, what)
        if k != lin.codes.shape[1] or (addr - self.base[op]) * 4 % k:
            raise NoMapping(f"{what}: a {k}-input tile at DRAM byte {addr} is no whole row of '{op}' "
                            f"({lin.codes.shape[1]} inputs, weights at {self.base[op]})")
        return (addr - self.base[op]) * 4 // k

    def rows(self, op: str, r0: int, n: int, what: str) -> np.ndarray:
        """Deployed ternary codes of rows r0 .. r0 + n - 1 of `op` (int8 [n, k])."""
        codes = self._lin(op, what).codes
        if r0 + n > codes.shape[0]:
            raise NoMapping(f"{what}: rows {r0}..{r0 + n - 1} of '{op}', which has {codes.shape[0]}")
        return codes[r0:r0 + n]

    def acts(self, step: int, op: str, tokens: int, k: int, what: str) -> np.ndarray:
        """INT8 activations the projection `op` reads in `step` (int64 [tokens, k])."""
        key = f"{input_of(op)}.q"
        if step >= len(self.run.steps) or key not in self.run.steps[step].buffers:
            raise NoMapping(f"{what}: the golden has no '{key}' in step {step}")
        q = self.run.steps[step].buffers[key]
        if q.shape != (tokens, k):
            raise NoMapping(f"{what}: a tile of {tokens} tokens x {k} inputs reads '{key}' of shape {q.shape} "
                            "(a token chunk of a spilled projection is not mapped)")
        return q

    def acc(self, step: int, op: str, r0: int, n: int) -> np.ndarray:
        """The golden accumulators of rows r0 .. r0 + n - 1 of `op` in `step` (int64 [tokens, n])."""
        return self.run.steps[step].buffers[f"{op}.acc"][:, r0:r0 + n]

    def kv_rows(self) -> dict[int, bytes]:
        """The INT8 K and V rows of every position the golden appended, by DRAM address (sim.kvcache.kv_addr:
        the golden's `layers.L.attn.kv_append.k8` / `v8` of each step, positions in step order)."""
        from lowbit.sim.kvcache import kv_addr

        s = self.spec
        out: dict[int, bytes] = {}
        for layer in range(s.n_layers):
            for v, name in ((False, "k8"), (True, "v8")):
                rows = np.concatenate([st.buffers[f"layers.{layer}.attn.kv_append.{name}"] for st in self.run.steps])
                for pos in range(rows.shape[0]):
                    for g in range(s.n_kv_heads):
                        out[kv_addr(s, layer, g, v, pos)] = rows[pos, g].astype(np.int8).tobytes()
        return out

    def quant(self, step: int, op: str) -> np.ndarray | None:
        """The INT8 output of quantize op `op` in `step` ([T, dim]), None if the golden has none."""
        if step >= len(self.run.steps):
            return None
        return self.run.steps[step].buffers.get(f"{op}.q")


def prompt_ids(spec: ModelSpec, prefill: int, seed: int) -> np.ndarray:
    """The seeded prompt (module docstring)."""
    return np.random.default_rng([seed, 2]).integers(0, spec.vocab, size=prefill)


def golden_of(spec: ModelSpec, cfg, prefill: int, decode: int, lop_on: bool, seed: int) -> tuple[Deployed, GoldenRun]:
    """The deployed seeded weights and the golden run of `prefill` seeded prompt tokens and `decode` greedy
    steps on `cfg` (module docstring). Raises WorkloadError where the golden refuses the shape."""
    lm = cfg.lm_head if cfg.lm_head in ("int8", "ternary") else "int8"
    proj = cfg.fp4.format if cfg.has("fp4") and not cfg.has("tint") else "ternary"
    dep = deploy(spec, seeded_weights(spec, seed), lm_head=lm, proj=proj)
    return dep, golden_run(dep, cfg, prompt_ids(spec, prefill, seed), decode, lop=lop_on)


def lop_positions(run: GoldenRun, spec: ModelSpec) -> dict[tuple[int, int], list[np.ndarray]]:
    """The golden's LOP selections as the lowering takes them (lowbit.sim.compile.compile_program's
    `lop_positions`): {(layer, step): per KV head the ascending positions of `layers.L.attn.lop.sel`}, for
    every step that has one (the decode steps of a run with LOP)."""
    out = {}
    for i, st in enumerate(run.steps):
        for layer in range(spec.n_layers):
            sel = st.buffers.get(f"layers.{layer}.attn.lop.sel")
            if sel is not None:
                out[(layer, i)] = [np.flatnonzero(sel[g]).astype(np.int64) for g in range(sel.shape[0])]
    return out


def compile_from_golden(cfg, model: str, prefill: int, decode: int, path, seed: int = 0):
    """Compile `model` (prefill + decode) for `cfg` into `path` with the LOP selections of the golden run the
    chip bench checks against (seed `seed`): the data-driven selections the chip's LOP unit makes on those
    contents, so the program's indirect K/V fetches (and the simulator's timing of them) are the rows the
    chip's index FIFO names. Falls back to the trace's selections where the golden does not cover the
    workload. Returns (lowbit.sim.compile.CompileStats, '' or why the trace's selections were compiled)."""
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.errors import WorkloadError
    from lowbit.sim.workloads import check_workload

    tr = build_trace(model, None, prefill, decode, cfg, None)
    check_workload(cfg, tr)
    pos, why = None, ""
    if cfg.has("lop") and cfg.lop.enabled and decode > 0 and prefill > 0:
        try:
            _, run = golden_of(tr.model, cfg, prefill, decode, True, seed)
            pos = lop_positions(run, tr.model)
        except WorkloadError as e:
            why = f"the whole-model golden refuses it: {e}"
    return compile_program(cfg, tr, path, lop_positions=pos), why


def lop_fetch_check(img, mc: ModelContents) -> tuple[int, int, int, str]:
    """The K/V rows the program's dma_kv reads fetch in each decode step whose golden LOP drops keys, against
    the golden's `layers.L.attn.lop.sel`: (selections that drop keys (step, layer, KV head), K and V rows
    their fetches read, rows missing or extra, the first difference). Rows are told by their DRAM address
    (sim.kvcache.kv_addr)."""
    from lowbit.sim.isa import KV_BASE

    s = mc.spec
    plane = s.max_positions * s.head_dim
    q = img.queues.index("dma_kv") if "dma_kv" in img.queues else -1
    got: dict[tuple[int, int, int, bool], set[int]] = {}
    for w in img.words[q] if q >= 0 else []:
        if w["wr"] or w["addr"] < KV_BASE or "step" not in w:
            continue
        off = w["addr"] - KV_BASE
        lg, rem = divmod(off, 2 * plane)
        layer, g = divmod(lg, s.n_kv_heads)
        v, pos = divmod(rem, plane)
        if layer >= s.n_layers or pos % s.head_dim or w["nbytes"] % s.head_dim:
            continue
        p0 = pos // s.head_dim
        got.setdefault((w["step"], layer, g, bool(v)), set()).update(range(p0, p0 + w["nbytes"] // s.head_dim))
    sels = rows = bad = 0
    first = ""
    for i, st in enumerate(mc.run.steps):
        for layer in range(s.n_layers):
            sel = st.buffers.get(f"layers.{layer}.attn.lop.sel")
            if sel is None:
                continue
            for g in range(sel.shape[0]):
                if sel[g].all():
                    continue
                sels += 1
                want = set(np.flatnonzero(sel[g]).tolist())
                for v in (False, True):
                    have = got.get((i, layer, g, v), set())
                    rows += len(have)
                    diff = len(have ^ want)
                    bad += diff
                    if diff and not first:
                        first = (f"step {i} layer {layer} KV head {g} {'V' if v else 'K'}: fetches "
                                 f"{sorted(have)}, the golden selects {sorted(want)}")
    return sels, rows, bad, first


def model_contents(img, cfg, meta, seed: int) -> tuple[ModelContents | None, str]:
    """The golden run of the program's workload (`meta`: lowbit.sim.program_io.RunMeta) on `cfg`, or (None,
    why) when the golden does not cover it (an FP4 or non-ternary model, a batched program, a shape the
    golden refuses)."""
    from lowbit.sim.errors import WorkloadError

    try:
        spec = ModelSpec(**meta.model)
    except TypeError as e:
        return None, f"the program's model is not a ModelSpec ({e})"
    if meta.sequences:
        return None, "a batched program (the golden runs one sequence)"
    if meta.prefill < 1:
        return None, "a program without a prefill step"
    try:
        dep, run = golden_of(spec, cfg, meta.prefill, meta.decode, meta.lop_on, seed)
    except WorkloadError as e:
        return None, f"the whole-model golden refuses it: {e}"
    steps = 1 + max((w.get("step", 0) for ws in img.words for w in ws), default=0)
    if steps != len(run.steps):
        return None, f"the program has {steps} steps, the golden run {len(run.steps)}"
    base: dict[str, int] = {}
    for ws in img.words:
        for w in ws:
            if w.get("free") and "macs" in w and w.get("op") in dep.linears:
                d = img.words[w["free_q"]][w["free_i"]]
                base[w["op"]] = min(base.get(w["op"], 1 << 62), d["addr"])
    return ModelContents(spec, dep, run, seed, base), ""
