"""Generate docs/isa.md from the ISA table (``flightc isa-doc`` / ``make docs``)."""
from __future__ import annotations

from flightc.isa.table import ISA, ISA_VERSION, WEIGHT_BITS, FieldKind, Unit, group_scale_max
from flightc.numerics import NORM_DEN_BITS, NORM_RECIP_BITS, NORM_SHIFT_MAX

INTRO = """# Instruction set (ISA {version})

*Generated from `flightc/isa/table.py` by `flightc isa-doc`; do not edit by hand.*

Instructions are little-endian bit fields; bits [2:0] of every instruction hold the opcode, which
gives the class and so the length. Each instruction carries `wait` and `release` masks with one
bit per unit ({units}): before it starts, the unit pops one token from the FIFO of every unit
marked in `wait`; after it finishes, it pushes one token to every unit marked in `release`. An
instruction may not mark its own unit. Reserved bits must be zero.

Refinements over FlightLLM's six classes, and why:
- **MM and MV share one unit (MPE).** They run on the same DSP chains in two modes, so they share
  one queue and one token identity; FlightLLM's separate masks for them could not express that.
- **Requantization lives in the MPE output stage** (`out_mode`), with per-row multiplier records
  in the PRM buffer: the INT32 accumulators never leave the MPE except as raw scores or logits.
- **A LUT in the output stage** fuses element-wise activations (SiLU) into MV/MM.
- **LD can gather** rows by token id, so the decode program needs no host patching per token.
- **SOFTMAX takes a sliding window** (Mistral), and the requantization record carries a per-row
  INT32 bias (Qwen2's QKV biases, OPT's biases) added to the accumulator before requantization.
- **An INT4 KV cache** (ISA 1.2): `ST.pack4` saturates INT8 keys and values to INT4 and packs
  two per byte; the MPE reads them back as dense 4-bit operands (K rows as weight rows, V rows
  K-major), so the cache's memory traffic halves without an unpack step; the generated RTL
  implements both (ST.pack4 in the store unit, 4-bit K-major operands in the MPE).
- **MV can stream its weights** (ISA 1.4, `w_stream`): a tile laid out as a stream image
  (flightc.compress.stream) flows from every master's channels straight into the lane groups,
  two output rows a DSP48E2 against one shared activation, without a WGT buffer round trip.
- **ST can write one row of a stream image** (ISA 1.5, `img`): decode streams a KV head's keys from
  their image like a weight tile, and each step's new key goes into it a row at a time; the store
  unit works out the row's channel and address from `img_row` with shifts and masks, so the field
  is affine in the position and a length-adaptive template patches it like any other.
- **Norms divide through one reciprocal per row** (ISA 1.6): RMSNorm and LayerNorm scale each element by
  a {recip}-bit reciprocal of the row's normalized divisor (flightc.numerics.norm_scale) instead of
  dividing it, so the SFU's lanes need no divider of their own and a row costs about its reads.
- **MISC REQ requantizes INT32 rows to INT8** (ISA 1.6) with one multiplier and shift (`imm`, `shift`),
  as the MPE's REQ_I8 does with a record per row: a streamed P.V leaves its raw sums a word of row pairs
  a cycle (ACC32) instead of one requantized result a cycle, and the SFU requantizes them.
- **A streamed MV can hand softmax its row maximum** (ISA 1.7): with `MV.out_max` the output stage
  keeps the largest raw sum as it writes the scores and writes it just past them, and a SOFTMAX with
  `max_given` reads it there instead of making a pass over the row for it: decode's attention scores
  are read twice by the SFU, not three times.
- **The SFU works in ACT and ACC** (ISA 1.8): `MISC.src_buf` and `dst_buf` name only those (the
  encoder refuses the others), as the MPE writes only ACT and ACC; so the WGT, PRM and KV buffers are
  written by LD alone and the hardware spends no write multiplexer on their banks.
- **A striped LD row can land in each master's own buffer bank** (ISA 1.8, a matter of speed, never refused):
  with stripe units of `stripe_bytes` at multiples of it in memory, a buffer address `channel` units past a
  multiple of `mem_channels` units, and one round of the stripe unless it spans every channel, into a buffer
  the config cuts in banks (`banked_buffers`; `flightc.isa.footprint.own_banks`), every master's LD lane writes its share into its own bank; LD lane 0
  moves any other striped row alone, unit by unit. The compiler lays its striped rows out so.
- **A streamed MV may read its tile before its waits** (ISA 1.9, `MV.w_early`, a matter of speed): a tile no
  instruction of the program writes (a layer's weights: the compiler marks each one so, `flightc.compiler.early_tiles`)
  is read while the MPE idles before the MV, as far as the readers' FIFOs hold it, since its waits order its
  activation (a norm, the gated product), not its tile; the functional simulator refuses a program that writes a
  byte of such a tile. MV grows to 288 bits for the flag.
- **Widths are per class** (multiples of 32 bits), as in FlightLLM: {widths}.

Operand rules every backend enforces (the functional simulator refuses a program that breaks them;
the RTL streams its operands and relies on them):
- A result may coincide exactly with an operand (same buffer, address, rows, width and stride: RoPE
  or EMUL in place, the residual of REQ_ADD and DEQ_ADD) but must not overlap one partly.
- The positions of a sparse weight row are distinct and ascending within each block.
- A group multiplier of b-bit weights is at most {gs_max} (ISA 1.4: `127 // 2^(b-1)`), so q x multiplier
  is an INT8 operand and the MACs may apply it to a group's partial sum exactly.
- A norm's `shift` is at most {norm_shift} (ISA 1.6), so its divisor `rms << shift` stays below 2^{den_bits}.
- `MV.out_max` only with `w_stream` and ACC32; `MISC.max_given` only with SOFTMAX, and the value past
  each row equals the maximum of the row's visible scores (ISA 1.7).
"""


def field_type(f) -> str:
    if f.kind is FieldKind.ENUM:
        return "enum " + f.enum.__name__ + ": " + ", ".join(f"{e.name}={int(e)}" for e in f.allowed)
    if f.kind is FieldKind.MASK:
        return "unit mask"
    return {FieldKind.UINT: "unsigned", FieldKind.INT: "signed", FieldKind.BOOL: "flag",
            FieldKind.RESERVED: "zero"}[f.kind]


def render() -> str:
    gs_max = ", ".join(f"{group_scale_max(b)} for W{b}" for b in sorted(WEIGHT_BITS.values()) if b != 8)
    widths = ", ".join(f"{c.name} {c.width}" for c in ISA.values())
    lines = [INTRO.format(version=ISA_VERSION, units=", ".join(f"{u.name}={int(u)}" for u in Unit), gs_max=gs_max,
                          recip=NORM_RECIP_BITS, norm_shift=NORM_SHIFT_MAX, den_bits=NORM_DEN_BITS, widths=widths)]
    lines.append("| class | opcode | unit | bits | meaning |\n|---|---|---|---|---|")
    for cls in ISA.values():
        lines.append(f"| {cls.name} | {int(cls.opcode)} | {cls.unit.name} | {cls.width} | {cls.doc} |")
    for cls in ISA.values():
        lines.append(f"\n## {cls.name} ({cls.width} bits, unit {cls.unit.name})\n\n{cls.doc}\n")
        lines.append("| bits | field | type | meaning |\n|---|---|---|---|")
        for p in cls.layout:
            bits = f"[{p.hi}:{p.lo}]" if p.hi != p.lo else f"[{p.lo}]"
            lines.append(f"| {bits} | `{p.field.name}` | {field_type(p.field)} | {p.field.doc} |")
    return "\n".join(lines) + "\n"
