"""GPU probe: LOP attention of this checkout against an earlier version of ``lop_attn.py``, same caches
(BitNet-3B H32/KV32/d100 and 2B4T H20/KV5/d128 at 1k and 8k tokens, K/M = 1/16, 8 cache copies so that
they are not L2-resident): the group scores, indices and outputs must be equal; times (µs, CUDA graph,
:func:`lowbit.models.gpu.bench.bench_graph`) of the default call and of the scoring launch alone
(``stages=1``), and of this checkout's other chunk sizes:

    git show COMMIT:lowbit/models/gpu/lop_attn.py > /tmp/lop_old.py
    python bench/gpu_lop_ab_probe.py /tmp/lop_old.py DIR   # writes DIR/lop_ab.json; exit 5 if not faster
"""

import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import torch

from lowbit.models.gpu import lop_attn as new
from lowbit.models.gpu.bench import bench_graph
from lowbit.models.gpu.bench_attention import ATTN_SHAPES, lop_caches


def load_old(path: str):
    """The old module, imported inside ``lowbit.models.gpu`` so that its relative imports resolve."""
    spec = importlib.util.spec_from_file_location("lowbit.models.gpu._lop_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(old_path: str, out_dir: str) -> int:
    old = load_old(old_path)
    print(torch.cuda.get_device_name(), flush=True)
    res = []
    gen = torch.Generator(device="cuda")
    for model, (h, kvh, d) in ATTN_SHAPES.items():
        for m in (1024, 8192):
            gen.manual_seed(m + h)
            ksel = m // 16
            q = torch.randn(1, h, d, device="cuda", generator=gen).to(torch.bfloat16)
            cs = lop_caches(kvh, m, d, 8, gen)[0]
            kc, vc, lo = cs[0]
            o_old, dbg_old = old.lop_attention(q, kc, vc, lo, m, ksel, return_debug=True)
            o_new, dbg_new = new.lop_attention(q, kc, vc, lo, m, ksel, return_debug=True)
            same = bool(torch.equal(dbg_old["scores"], dbg_new["scores"]) and torch.equal(dbg_old["idx"], dbg_new["idx"])
                        and torch.equal(o_old, o_new))
            row = {"model": model, "m": m, "same": same}
            for name, mod in (("old", old), ("new", new)):
                chunk = (mod.lop_default_chunk(kvh, m, q.device) if hasattr(mod, "lop_default_chunk")
                         else mod.lop_launch_plan(kvh, m, q.device)[0])  # versions before the one-launch form went
                row[name] = round(bench_graph([partial(mod.lop_attention, q, a, b, c, m, ksel) for a, b, c in cs]), 2)
                row[name + "_score"] = round(bench_graph(
                    [partial(mod.lop_attention, q, a, b, c, m, ksel, stages=1) for a, b, c in cs]), 2)
                for ch in (128, 256, 512):
                    if name == "new" and ch != chunk and ch < 2 * m:
                        row[f"{name}_ch{ch}"] = round(bench_graph(
                            [partial(mod.lop_attention, q, a, b, c, m, ksel, chunk=ch) for a, b, c in cs]), 2)
                row[name + "_chunk"] = chunk
            print(json.dumps(row), flush=True)
            res.append(row)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "lop_ab.json").write_text(json.dumps(res, indent=1) + "\n")
    keep = all(r["same"] for r in res) and sum(r["new"] for r in res) < sum(r["old"] for r in res)
    print("new faster" if keep else "new not faster (or results differ)", flush=True)
    return 0 if keep else 5


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
