"""Off-chip DRAM timing model (LPDDR bank/row-buffer model or a simple latency+bandwidth model).

Built to be called from a numba-compiled scheduler loop: the configuration is a float64 vector
(:func:`dram_params`), the mutable state is a float64 vector (:func:`new_dram_state`) and
:func:`dram_access` is an ``@njit`` function of plain arrays and scalars. All times are in
**accelerator clock cycles** (float64; fractional cycles are kept so that a DRAM clock that is not a
multiple of the core clock does not drift).

Address mapping (``row : bank : column : channel : byte-in-burst``, "RoBaCoCh", low bits first)::

    g    = addr // burst_bytes            global burst index (burst_bytes = bus_bits/8 * BL, 32 B for x16 BL16)
    ch   = g % channels                   consecutive bursts alternate channels  -> all channels stream at once
    cb   = g // channels                  burst index inside the channel
    col  = cb % (row_bytes/burst_bytes)   a whole row (page) is read before moving on -> row-buffer hits
    bank = (cb // bursts_per_row) % banks the next row goes to the next bank -> its ACT overlaps the current row
    row  = cb // (bursts_per_row*banks)

Why this interleave (DESIGN ASSUMPTION, the usual open-page mapping): a sequential stream hits the open
row 63 times out of 64 (2 KB rows, 32 B bursts), and the one row miss per row goes to a bank that was
idle, so its PRE/ACT is hidden behind the previous row's data by the controller's lookahead (below).

LPDDR timing rules (open-page policy, per channel; JEDEC JESD209-5B / JESD209-4 command timings):

* row hit: data starts ``tCL`` after the RD command; bursts to an open row go back-to-back on the data bus.
* row miss, bank closed: ``ACT -> tRCD -> RD -> tCL -> data``.
* row miss, other row open: ``PRE`` no earlier than ``ACT_prev + tRAS``, then ``tRP`` before the ``ACT``.
* data bus: one burst takes ``burst time = BL / data_rate`` seconds; a channel's bus carries one burst at a
  time; channels are fully independent (parallel).
* all-bank refresh every ``tREFI`` per channel: all open rows are precharged (``tRP``), the channel is
  blocked for ``tRFC``, and all banks are closed afterwards. A refresh is taken at the first row-segment
  boundary at/after its due time (a refresh is never split into a row's run of bursts; JEDEC allows postponing
  up to 8 refreshes, so a deferral of < 1 row is legal). Refreshes that fall into idle time cost nothing.
* ACT rate: at most one ACT per ``tRRD`` per channel (``ACT_SPACING_NS`` by DRAM type = tFAW / 4, so the
  four-activate window is implied): LPDDR5/5X 5 ns (tRRD = max(5 ns, 2nCK), tFAW = 20 ns in bank-group mode;
  gem5 lpddr5.py, "initial JEDEC specification"), LPDDR4X 10 ns (JESD209-4 tRRD = max(10 ns, 4nCK),
  tFAW = 40 ns; typical values as commonly quoted).
* controller queue (DESIGN ASSUMPTION): a 32-entry per-channel queue, ``CTRL_LOOKAHEAD_BURSTS``, of
  ``W = 32 * burst time``. (a) Commands for a burst may be issued up to W before the data bus is free: this
  hides PRE/ACT of the next row behind the current row's data. (b) Bounded reordering: the data bus and the
  ACT slot are *cursors* that advance by the work done; a request stalled by its bank (tRAS/tRP/tRCD of a
  conflict) returns late but drags a cursor only to ``its finish - W``, so later requests to idle banks can
  use the gap (as an FR-FCFS controller with a W-deep queue would). This is a fluid approximation: bus
  intervals of overtaking requests are not checked for overlap; busy time per channel is exact.

Simplifications (stated): reads and writes use the same timing (no separate write latency, tWR, tWTR, or
read/write turnaround); no tRTP; tRRD and tFAW folded into one average ACT spacing; no LPDDR5 bank-group
tCCD_L (assumes the controller interleaves bank groups or uses BL32, as needed to reach full bandwidth in BG
mode); precharge-all before a refresh uses tRP (tRPpb), not tRPab (3 ns less); all channels refresh at the
same time; apart from the bounded reordering above, requests are served in call order on each channel (a
request whose ``t_issue`` is earlier than the channel's bus cursor queues behind it).

Measured (``stream_efficiency``, 64 MiB sequential read): vitallm LPDDR5X-8533 x64 91.4 % of 68.26 GB/s,
vitallm-lpddr4x LPDDR4X-4266 x64 91.5 % of 34.13 GB/s; the loss is all-bank refresh,
~(tRFC + tRP + tRCD + tCL) / tREFI. Without refresh a stream reaches > 99.9 %. Random 32 B (or 128 B)
reads over 1 GiB: 19 % (LPDDR5X) / 27 % (LPDDR4X) of peak (ACT-rate bound at 37.5 %, less through bank
conflicts beyond the queue window); random 2 KiB blocks: 91 %.

Simple mode (``dram.model = "simple"``): one aggregated channel,
``t_done = max(t_issue, bus_free) + latency + nbytes / (peak_bytes_per_cycle * efficiency)`` and the bus is
busy for the transfer part only (the latency is pipelined).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lowbit.sim.config import HwConfig
from lowbit.sim.errors import ConfigError, WorkloadError
from lowbit.sim.schema import EXACT_CYCLES

# ----------------------------------------------------------------------------- parameter vector indices
P_MODE = 0            # 0 = lpddr (bank model), 1 = simple
P_CHANNELS = 1
P_BANKS = 2
P_ROW_BYTES = 3       # page size per channel
P_BURST_BYTES = 4     # bus_bits/8 * burst_length
P_T_BURST = 5         # cycles one burst occupies a channel's data bus
P_TRCD = 6            # cycles
P_TRP = 7
P_TCL = 8             # read latency RL
P_TRAS = 9
P_TRFC = 10
P_TREFI = 11          # 0 disables refresh
P_LOOKAHEAD = 12      # cycles: how far ahead of the data bus commands may be issued
P_SIMPLE_LAT = 13     # cycles (simple mode)
P_SIMPLE_BPC = 14     # bytes/cycle, all channels, times efficiency (simple mode)
P_PEAK_BPC = 15       # peak bytes/cycle, all channels
P_CLOCK_HZ = 16       # accelerator clock, for converting back to seconds
P_TRRD = 17           # cycles between ACTs on one channel (ACT_SPACING_NS)
# log2 of burst_bytes, bursts per row, channels, banks when all four are powers of two (the address mapping's
# divisions become shifts and masks: the same integers, fewer cycles), else -1 (integer division)
P_LOG2_BURST = 18
P_LOG2_BPR = 19
P_LOG2_CH = 20
P_LOG2_BANKS = 21
N_PARAMS = 22

MODE_LPDDR = 0
MODE_SIMPLE = 1
CTRL_LOOKAHEAD_BURSTS = 32  # DESIGN ASSUMPTION: 32-entry per-channel command queue
# Minimum average ACT-to-ACT spacing per channel, ns (= tFAW / 4 >= tRRD); see the module docstring.
ACT_SPACING_NS = {"LPDDR5X": 5.0, "LPDDR5": 5.0, "LPDDR4X": 10.0}

# ----------------------------------------------------------------------------- state vector indices
# Fixed-size counters first, then per-channel and per-bank arrays (offsets depend on channels/banks).
S_BYTES = 0           # S_BYTES + cls: requested bytes per class (cls 0..3)
S_READ_BYTES = 4
S_WRITE_BYTES = 5
S_ROW_HITS = 6        # bursts that found their row open
S_ROW_MISSES = 7      # bursts that needed an ACT
S_REFRESHES = 8       # all-bank refreshes (per channel, summed)
S_BUSY = 9            # data-bus busy cycles summed over channels
S_ACCESSES = 10
S_BURSTS = 11
S_LAST_DONE = 12      # latest t_done returned so far
S_BASE = 16           # per-channel arrays start here

CLASSES = ("weights", "kv", "act", "lop")
CLS_WEIGHTS, CLS_KV, CLS_ACT, CLS_LOP = 0, 1, 2, 3


def dram_params(cfg: HwConfig) -> np.ndarray:
    """Timing parameter vector (float64, indices P_*) of `cfg.dram`, converted to accelerator cycles.

    cycles = ns * clock_hz / 1e9; burst time = burst_length / (data_rate_mtps * 1e6) * clock_hz.
    """
    d = cfg.dram
    cyc = cfg.clock_hz * 1e-9
    p = np.zeros(N_PARAMS, np.float64)
    p[P_MODE] = MODE_SIMPLE if d.model == "simple" else MODE_LPDDR
    p[P_CHANNELS] = d.channels
    p[P_BANKS] = d.banks
    p[P_ROW_BYTES] = d.row_bytes
    p[P_BURST_BYTES] = d.burst_bytes
    p[P_T_BURST] = d.burst_length / (d.data_rate_mtps * 1e6) * cfg.clock_hz
    p[P_TRCD] = d.tRCD_ns * cyc
    p[P_TRP] = d.tRP_ns * cyc
    p[P_TCL] = d.tCL_ns * cyc
    p[P_TRAS] = d.tRAS_ns * cyc
    p[P_TRFC] = d.tRFC_ns * cyc
    p[P_TREFI] = d.tREFI_ns * cyc
    p[P_LOOKAHEAD] = CTRL_LOOKAHEAD_BURSTS * p[P_T_BURST]
    p[P_SIMPLE_LAT] = d.latency_ns * cyc
    p[P_PEAK_BPC] = d.peak_bytes_per_s / cfg.clock_hz
    p[P_SIMPLE_BPC] = p[P_PEAK_BPC] * d.efficiency
    p[P_CLOCK_HZ] = cfg.clock_hz
    p[P_TRRD] = ACT_SPACING_NS[d.type] * cyc
    if d.row_bytes % d.burst_bytes:
        raise ConfigError(f"dram.row_bytes = {d.row_bytes} must be a multiple of the burst size {d.burst_bytes} B "
                          "(bus_bits/8 * burst_length)")
    dims = (d.burst_bytes, d.row_bytes // d.burst_bytes, d.channels, d.banks)
    pow2 = all(x > 0 and x & (x - 1) == 0 for x in dims)
    p[P_LOG2_BURST:P_LOG2_BANKS + 1] = [x.bit_length() - 1 if pow2 else -1 for x in dims]
    return p


def state_offsets(channels: int, banks: int) -> tuple[int, int, int, int, int, int, int]:
    """Offsets into the state: (next_refresh[C], bus_cursor[C], open_row[C*B], act_time[C*B],
    bank_ready[C*B], act_cursor[C], total length)."""
    c, cb = channels, channels * banks
    nref = S_BASE
    bus = nref + c
    orow = bus + c
    act = orow + cb
    rdy = act + cb
    acur = rdy + cb
    return nref, bus, orow, act, rdy, acur, acur + c


def new_dram_state(cfg: HwConfig) -> np.ndarray:
    """Fresh state: all banks closed (open row -1), buses free at 0, first refresh due at tREFI."""
    p = dram_params(cfg)
    nref, bus, orow, act, rdy, acur, n = state_offsets(cfg.dram.channels, cfg.dram.banks)
    s = np.zeros(n, np.float64)
    s[nref:bus] = p[P_TREFI] if p[P_TREFI] > 0 else np.inf
    s[orow:act] = -1.0
    s[act:rdy] = -np.inf   # no ACT yet: tRAS never binds
    s[acur:n] = -np.inf    # no ACT yet: tRRD never binds
    return s


@njit("void(float64[::1], float64[::1], int64, float64, int64, int64, int64, int64, int64, int64)", cache=True)
def _refresh(p, s, ch, t_now, nref, bus, orow, act, rdy, acur):
    """Take every refresh of channel `ch` that is due at `t_now` (see module docstring)."""
    trefi = p[P_TREFI]
    B = int(p[P_BANKS])
    r = s[nref + ch]
    if t_now < r:
        return
    # refreshes wholly inside idle time before the last due one: counted, no effect on timing
    k = np.floor((t_now - r) / trefi)
    if k > 0:
        s[S_REFRESHES] += k
        r += k * trefi
    start = max(r, s[bus + ch])
    any_open = False
    for b in range(B):
        i = ch * B + b
        if s[orow + i] >= 0:
            any_open = True
            start = max(start, s[rdy + i], s[act + i] + p[P_TRAS])
    if any_open:
        start += p[P_TRP]  # precharge-all before REFab
    end = start + p[P_TRFC]
    for b in range(B):
        i = ch * B + b
        s[orow + i] = -1.0
        s[rdy + i] = max(s[rdy + i], end)
    s[bus + ch] = max(s[bus + ch], end)
    s[acur + ch] = max(s[acur + ch], end)
    s[S_REFRESHES] += 1.0
    s[nref + ch] = r + trefi


# x // d and x % d (floor, Python's sign rule; d > 0) of the address mapping: as a shift and a mask when d = 2^k,
# else integer division (the same integers either way)
@njit(inline="always")
def _shr(x, d, k):
    return x >> k


@njit(inline="always")
def _mask(x, d, k):
    return x & (d - 1)


@njit(inline="always")
def _floordiv(x, d, k):
    return x // d


@njit(inline="always")
def _floormod(x, d, k):
    return x % d


@njit(inline="always")
def access(params, state, addr, nbytes, t_issue, is_write, cls):
    """dram_access, inlined into the numba kernel that calls it."""
    p = params
    s = state
    addr = np.int64(addr)
    nbytes = np.int64(nbytes)
    if nbytes <= 0:
        return float(t_issue)
    if cls < 0 or cls > 3:
        raise ValueError("dram_access: cls must be 0 (weights), 1 (kv), 2 (act) or 3 (lop)")
    s[S_BYTES + cls] += nbytes
    if is_write:
        s[S_WRITE_BYTES] += nbytes
    else:
        s[S_READ_BYTES] += nbytes
    s[S_ACCESSES] += 1.0
    C = int(p[P_CHANNELS])
    B = int(p[P_BANKS])
    nref = S_BASE
    bus = nref + C
    orow = bus + C
    act = orow + C * B
    rdy = act + C * B
    acur = rdy + C * B

    if p[P_MODE] == MODE_SIMPLE:
        start = max(float(t_issue), s[bus])
        xfer = nbytes / p[P_SIMPLE_BPC]
        s[bus] = start + xfer
        s[S_BUSY] += xfer
        done = start + p[P_SIMPLE_LAT] + xfer
        s[S_LAST_DONE] = max(s[S_LAST_DONE], done)
        return done

    if p[P_LOG2_BURST] >= 0:
        done = _bursts(p, s, addr, nbytes, t_issue, C, B, nref, bus, orow, act, rdy, acur, _shr, _mask)
    else:
        done = _bursts_any(p, s, addr, nbytes, t_issue, C, B, nref, bus, orow, act, rdy, acur)
    s[S_LAST_DONE] = max(s[S_LAST_DONE], done)
    return done


@njit(inline="always")
def _bursts(p, s, addr, nbytes, t_issue, C, B, nref, bus, orow, act, rdy, acur, _div, _mod):
    """The LPDDR model's bursts of one request (module docstring), channel by channel and row segment by row
    segment; returns the cycle its last byte arrives. Parameters, the bus cursor and the hit/miss/busy counters
    are held in locals (the compiler cannot keep them in registers across the state's stores); the counters
    take the same additions in the same order."""
    bb = int(p[P_BURST_BYTES])
    bpr = int(p[P_ROW_BYTES]) // bb
    tb = p[P_T_BURST]
    look, tcl, trcd, trp, tras, trrd = p[P_LOOKAHEAD], p[P_TCL], p[P_TRCD], p[P_TRP], p[P_TRAS], p[P_TRRD]
    refresh = p[P_TREFI] > 0
    kbb, kbpr, kc, kb = int(p[P_LOG2_BURST]), int(p[P_LOG2_BPR]), int(p[P_LOG2_CH]), int(p[P_LOG2_BANKS])
    g0 = _div(addr, bb, kbb)
    g1 = _div(addr + nbytes - 1, bb, kbb)
    s[S_BURSTS] += g1 - g0 + 1
    hits, misses, busy = s[S_ROW_HITS], s[S_ROW_MISSES], s[S_BUSY]
    t_iss = float(t_issue)
    done = t_iss
    for ch in range(C):
        first = g0 + _mod(ch - g0, C, kc)
        if first > g1:
            continue
        cb = _div(first, C, kc)
        cb_end = _div(g1 - ch, C, kc)  # last in-channel burst index, inclusive
        while cb <= cb_end:
            seg_row = _div(cb, bpr, kbpr)
            n = min(cb_end, (seg_row + 1) * bpr - 1) - cb + 1  # bursts in this row segment
            bank = _mod(seg_row, B, kb)
            row = _div(seg_row, B, kb)
            i = ch * B + bank
            bc = s[bus + ch]
            t0 = max(t_iss, bc - look)
            if refresh and max(t0, bc) >= s[nref + ch]:  # a refresh is due (else _refresh returns at once)
                _refresh(p, s, ch, max(t0, bc), nref, bus, orow, act, rdy, acur)
                bc = s[bus + ch]
            orw = s[orow + i]
            if orw == row:
                hits += n
                tc = max(t0, s[rdy + i])
                nominal = t0 + tcl
            else:
                misses += 1.0
                hits += n - 1
                if orw >= 0:
                    tp = max(t0, s[rdy + i], s[act + i] + tras)
                    ta = tp + trp
                    ta_nom = t0 + trp  # ACT time had the bank been free
                else:
                    ta = max(t0, s[rdy + i])
                    ta_nom = t0
                ac = s[acur + ch]
                slot = max(ta_nom, ac)  # ACT slot (tRRD / tFAW) without the bank stall
                ta = max(ta, ac)
                s[acur + ch] = max(slot, ta - look) + trrd
                nominal = slot + trcd + tcl
                s[act + i] = ta
                s[orow + i] = row
                tc = ta + trcd
            ds = max(tc + tcl, bc)
            de = ds + n * tb
            # bus cursor: advances as if this request had not been stalled by its bank; a stalled request
            # drags it only to de - W (later requests to free banks may overtake it within the queue)
            ds_nom = max(nominal, bc)
            s[bus + ch] = max(ds_nom + n * tb, de - look)
            s[rdy + i] = de - tcl  # = last RD command + one burst (column commands pipelined)
            busy += n * tb
            done = max(done, de)
            cb += n
    s[S_ROW_HITS], s[S_ROW_MISSES], s[S_BUSY] = hits, misses, busy
    return done


@njit(cache=True)
def _bursts_any(p, s, addr, nbytes, t_issue, C, B, nref, bus, orow, act, rdy, acur):
    """_bursts with integer division (a mapping with a dimension that is no power of two): called, not inlined,
    so the compiled kernels carry one inlined copy of the burst loop (the shift variant)."""
    return _bursts(p, s, addr, nbytes, t_issue, C, B, nref, bus, orow, act, rdy, acur, _floordiv, _floormod)


@njit("float64(float64[::1], float64[::1], int64, int64, float64, boolean, int64)", cache=True)
def dram_access(params, state, addr, nbytes, t_issue, is_write, cls):
    """Compiled eagerly for one signature: (float64[:] params, float64[:] state, int64 addr, int64 nbytes,
    float64 t_issue, bool is_write, int64 cls) -> float64; numba converts compatible arguments.

    Serve one request of `nbytes` at byte address `addr` issued at cycle `t_issue`; return the cycle at
    which its last byte arrives (float64). `cls`: 0 weights, 1 kv, 2 activations, 3 lop (byte counters).
    nbytes <= 0 returns t_issue and changes nothing. Compiled kernels call `access` (the same function,
    inlined into them: no call per request)."""
    return access(params, state, addr, nbytes, t_issue, is_write, cls)


def dram_stats(state: np.ndarray) -> dict:
    """Counters of a state vector as a plain dict (bytes per class, row hits/misses, refreshes, busy cycles)."""
    s = state
    hits, misses = float(s[S_ROW_HITS]), float(s[S_ROW_MISSES])
    return {
        "bytes": {name: int(s[S_BYTES + i]) for i, name in enumerate(CLASSES)},
        "read_bytes": int(s[S_READ_BYTES]),
        "write_bytes": int(s[S_WRITE_BYTES]),
        "row_hits": int(hits),
        "row_misses": int(misses),
        "row_hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "refreshes": int(s[S_REFRESHES]),
        "busy_cycles": float(s[S_BUSY]),
        "accesses": int(s[S_ACCESSES]),
        "bursts": int(s[S_BURSTS]),
        "last_done": float(s[S_LAST_DONE]),
    }


def check_times(end: np.ndarray, params: np.ndarray, state: np.ndarray) -> None:
    """Overflow guard on the times a scheduled chunk produced (int64 `end`, and the DRAM model's float64
    times in `state`): WorkloadError when any is negative, non-finite or beyond EXACT_CYCLES = 2^53, the range
    in which float64 holds every integer cycle exactly. The input ranges (lowbit.sim.config, modelspec,
    workloads) keep every single tile's cycles far below it; this catches what accumulates (a run too long for
    exact arithmetic) before a wrapped value could become a result."""
    last = float(state[S_LAST_DONE])
    hi = int(end.max()) if len(end) else 0
    lo = int(end.min()) if len(end) else 0
    if lo < 0 or hi > EXACT_CYCLES or not np.isfinite(last) or last > EXACT_CYCLES:
        worst = max(hi, last) if np.isfinite(last) else last
        days = worst / params[P_CLOCK_HZ] / 86400 if np.isfinite(worst) else worst
        raise WorkloadError(f"simulated time left the exact cycle range (an instruction ends at {worst:.4g} cycles, "
                            f"{days:.3g} days; the bound is 2^53 cycles): the workload or the DRAM timings are too "
                            "large to simulate exactly; shorten the workload or check the config's timings")


def stream_bandwidth(cfg: HwConfig, nbytes: int = 64 << 20, chunk: int = 4096) -> float:
    """Sustained bytes/s of a sequential read of `nbytes` from address 0, issued as `chunk`-byte requests
    all at cycle 0 (they queue), through the model: nbytes / (t_done / clock_hz)."""
    p = dram_params(cfg)
    s = new_dram_state(cfg)
    done = _stream(p, s, int(nbytes), int(chunk))
    return nbytes / (done / cfg.clock_hz)


@njit(cache=True)
def _stream(p, s, nbytes, chunk):
    done = 0.0
    a = 0
    while a < nbytes:
        n = min(chunk, nbytes - a)
        done = max(done, dram_access(p, s, a, n, 0.0, False, 0))
        a += n
    return done


def stream_efficiency(cfg: HwConfig, nbytes: int = 64 << 20) -> float:
    """stream_bandwidth / peak (the fraction of cfg.dram.peak_bytes_per_s a long sequential read achieves)."""
    return stream_bandwidth(cfg, nbytes) / cfg.dram.peak_bytes_per_s
