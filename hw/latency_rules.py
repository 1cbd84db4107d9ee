"""The cycles the streamed datapath's pipelines take (pure Python: the performance model reads them too).

Each stage's registers are placed so that no path between them is deeper than the logic levels 225 MHz allows
on UltraScale+ (hw/timing.py); the cycles they cost follow from where they are.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from flightc.isa.table import MiscOp

if TYPE_CHECKING:
    from flightc.config import HardwareConfig

# a DSP chain's operands taken to its sums (hw/dsp_chain.py): the operands, the dequantized weight (two steps) and
# packed tokens, the product (M, P), a quarter's sums, the chain's; the MPE accumulates them then, and its last
# step's pipeline (the word's arrival, the chains' go, their sums, the accumulate) follows
CHAIN_LATENCY = 1 + 2 + 2 + 1 + 1
# the MPE's operands and format registered on their way into its chains (hw/mpe.py)
CHAIN_OPERAND_STAGE = 1


def chain_operand_stages(cfg: HardwareConfig) -> int:
    """Registers a chain step's operands pass on their way into the MPE's chains: CHAIN_OPERAND_STAGE, and two more
    where the config stores sparse weights as bitmasks: one before a step's block masks are turned into positions
    (behind the operand registers' byte shifter) and the conversion's own, between each column's count of the set
    bits before it and the positions (hw/mpe.py positions_of_masks)."""
    from flightc.config import SparseEncoding

    return CHAIN_OPERAND_STAGE + 2 * (SparseEncoding.BITMASK in cfg.sparse_encodings)
# A cascade adds CASCADE_STEP slots' products per register: one after the multiplier's M register closes a step at
# 4 levels (hw/timing.py), two would be 6 and three 8; the slots of the second step wait for the first's sum in their
# own pre-adder (ADREG) and second B register, so a cascade is two steps
CASCADE_STEP = 2
CASCADE_LATENCY = 4  # a cascade's operands to its sum: the A, B, D registers, (AD,) M, then each step's P
PRODUCT_LATENCY = 2  # a lone product's operands (unregistered) to it: M, then P
# a lane group's chunk on its input to its row pair's sums on its output (the last chunk's): the activation read,
# the cascades, the segment sums, their multipliers, the partial sums, the accumulator (hw/lane_group.py)
LANE_GROUP_LATENCY = 1 + CASCADE_LATENCY + 1 + PRODUCT_LATENCY + 1 + 1
# results a lane group's queue holds (hw/stream.py), and how many of them may be queued or on their way through the
# group before its feed is held (two places spare for the pair the feed decides as the hold starts): enough on their
# way to cover the group's latency when every pair is a single chunk
RESULT_QUEUE = 16
RESULTS_AHEAD = RESULT_QUEUE - 2
# a streamed MV's output stage (hw/stream_out.py): a result taken to the cycle it joins its word (the gather): its
# operands' registers, the biased sum, the requantization product (two DSP48E2 registers), the partial products' sum
# with the rounding half, the rounding shift, the residual's sum, the saturation, the activation LUT (two steps of
# sixteen entries), the result's rotation onto its lanes
# the rounding of a requantization (hw/requant.py): the biased sum, the product (M, P), their sum with the rounding
# half, the shift
ROUNDING_LATENCY = 1 + PRODUCT_LATENCY + 1 + 1
REQUANT_LATENCY = 1 + ROUNDING_LATENCY + 1 + 1 + 2 + 1
# raw sums taken a word of row pairs at a time: their registers, then their shift onto the word's lanes
PAIRS_OUT_LATENCY = 2
# a streamed MV's tile plan (hw/tile_plan.py): its fields' consequences, a group's padded rows and a block's chunks,
# a group's pairs and a block's beats, the products (the rest's bytes, a dense pair's, the whole blocks' beats), a
# pair's beats (two steps), its group's beats (a product), the rounds, then the plan's outputs
TILE_PLAN_STAGES = 3 + PRODUCT_LATENCY + 2 + PRODUCT_LATENCY + 1 + 1
# a completed word waits in a queue for the buffer port (SyncFIFO: written in cycle g, read from g + 1); the queue
# holds every word a result in flight may complete, so taking a result never waits for the port's grant
WORD_QUEUE_LATENCY = 1
WORD_QUEUE = REQUANT_LATENCY + WORD_QUEUE_LATENCY + 2
# a word of the output stage's records or residuals: asked for in cycle a, read by the port in a + 1, registered
# (its stream's first bytes dropped), then in its queue's count from a + 3
OPERAND_ARRIVAL = 3


def max_depth(values: int) -> int:
    """Levels of a pairwise tree over ``values`` (a compare and a multiplexer each, registered)."""
    return max(0, (values - 1).bit_length())


def pairs_max_settle(pairs: int) -> int:
    """Cycles from a take of raw sums (``pairs`` row pairs a word, hw/stream_out.py) until the largest of them is in
    the word MV.out_max writes past the results: their registers, a level of the tree a cycle, ``best``, the word."""
    return 1 + max_depth(2 * pairs) + 1 + 1


# a requantized MV's largest raw sum (MV.out_max) is in the word written past the results 3 cycles after the take of
# its result: the result's register, ``best``, the word
RESULT_MAX_SETTLE = 1 + 1 + 1

# LD's issuer (hw/load.py), a register between its steps: the instruction's stripe decided in two cycles before its
# first row (PREP: shifts, the lane's channels, a plain row's channel; PREP2: the lane's part of it, that channel's
# base), a striped row's unit placed in two (UNIT: its channel's base, its bytes and buffer place, or the row's end
# found; UNIT2: its address), and a burst's bytes worked out in the cycle before it is asked for (SIZE)
LD_PREP = 2
LD_UNIT = 2
LD_ROW_END = 1
LD_BURST_SETUP = 1
# a gathered row's id is multiplied by the stride in 17-bit halves (two DSP48E2s' worth of bits a side; the high
# halves' product is past the 32-bit address), and its address follows a register a step: the id's part, the
# products, their sum with hbm_addr, the channel's base; then the row's first burst is sized
GATHER_HALF_BITS = 17
LD_GATHER_ADDRESS = 1 + PRODUCT_LATENCY + 1 + 1
# LD's receivers (hw/load.py): a burst's descriptor is at the head of its queue (DescriptorQueue: a register) two
# cycles after it is written, where it waits for nothing else; a gathered row's id is merged from its beat's
# register the cycle after the beat, so the issuer sees it two cycles after the beat
LD_HEAD_LATENCY = 2
LD_ID_SEEN = 2

# a product wider than one DSP48E2 (hw/dsp48e2.py wide_product): its limbs' products (M, P), then their sum
WIDE_PRODUCT_LATENCY = PRODUCT_LATENCY + 1
# The SFU's lanes (hw/sfu_lanes.py), a register a step from the cycle they take a chunk's operands: the centred
# element, the products' second operands and the difference from the row's maximum (1); EMUL's INT8 product meets
# them (2); the wide products (3 each) and the steps after them: a norm's clamp, its two shifts and its scaled
# product times the row's reciprocal, its rounding with the LayerNorm bias, the saturation (12); the requantization's
# rounding half and its shift in two steps (8), the saturations (9), DEQ_ADD's residual and its saturation (11);
# softmax's clamped exponent, its LUT entry and shift (11), the probability's product and rounding (15). A chunk's
# results go into the queue for the write engine from their op's stage.
SFU_NORM_PRODUCT = 1 + WIDE_PRODUCT_LATENCY  # d * d (statistics) or d * gain: a norm's products
SFU_REQUANT_LATENCY = 2 + WIDE_PRODUCT_LATENCY + 3 + 1  # EMUL's, REQ's and DEQ's results
SFU_DEQ_ADD_LATENCY = SFU_REQUANT_LATENCY + 2
SFU_NORM_LATENCY = SFU_NORM_PRODUCT + 3 + WIDE_PRODUCT_LATENCY + 2
SFU_EXP = 2 + WIDE_PRODUCT_LATENCY + 3 + 3  # softmax's 2^u of each element
SFU_SOFTMAX_LATENCY = SFU_EXP + WIDE_PRODUCT_LATENCY + 1
SFU_OUT_LATENCY = max(SFU_REQUANT_LATENCY, SFU_DEQ_ADD_LATENCY, SFU_NORM_LATENCY, SFU_SOFTMAX_LATENCY)
# the chunks the SFU's operand reader may ask for ahead of the one the lanes wait for, each while the result queue
# has room for every chunk up to it (so that the lanes take each as it is in): a chunk of one-word operands asked
# for at t is in at t + 2 and taken at t + 3, so three keep a chunk a cycle coming
SFU_READ_AHEAD = 3
# results taken for the write engine that may be in flight or queued: the lanes take a chunk only while fewer are
# (its results then always find room), enough that a chunk every cycle (one word read, one word written, a word
# apart) is never held: a place is held from the take through the cycle after its write starts, and the reader asks
# for a chunk SFU_READ_AHEAD cycles before its take with room for it
SFU_RESULT_QUEUE = SFU_OUT_LATENCY + 1 + SFU_READ_AHEAD
# RoPE's chunk: the four INT8-by-INT16 products (M, P), the pairs' sums with the rounding half, the shift and
# saturation
SFU_ROPE_LATENCY = PRODUCT_LATENCY + 1 + 1


def tree_stages(values: int, levels_per_stage: int = 2) -> int:
    """Registers a pipelined tree over ``values`` terms holds (hw/arith.py pipelined_tree): one after every
    ``levels_per_stage`` levels and after the last."""
    return -(-max_depth(values) // levels_per_stage)


def sfu_result_latency(op: MiscOp) -> int:
    """Cycles from a chunk's take until its results enter the SFU's result queue, by op."""
    return {MiscOp.RMSNORM: SFU_NORM_LATENCY, MiscOp.LAYERNORM: SFU_NORM_LATENCY, MiscOp.SOFTMAX: SFU_SOFTMAX_LATENCY,
            MiscOp.DEQ_ADD: SFU_DEQ_ADD_LATENCY}.get(op, SFU_REQUANT_LATENCY)


# the SFU's trees across its lanes (hw/sfu_lanes.py), a register after every tree level: an adder's (two adders
# chained, yosys maps the three terms' sum with LUT compressors ahead of one carry chain, 7.1 levels with a lane's
# term selected before it) and a maximum's (a comparison, then a multiplexer)
SFU_SUM_LEVELS = 1
SFU_MAX_LEVELS = 1


def sfu_stat_drain(op: MiscOp, pass_: int, lanes: int) -> int:
    """Cycles from a statistics pass's take until what it adds is in the row's statistics (a tree over ``lanes``
    terms, then the accumulator): a norm's sum, softmax's maximum (pass 0) or its sum of powers (pass 1)."""
    if op is MiscOp.SOFTMAX and pass_ == 0:
        return 1 + tree_stages(lanes, SFU_MAX_LEVELS) + 1
    tree = tree_stages(lanes, SFU_SUM_LEVELS)
    if op is MiscOp.SOFTMAX:
        return SFU_EXP + tree + 1
    return SFU_NORM_PRODUCT + tree + 1


# the SFU's divisions (hw/sfu.py): the operands registered, round_div's numerator made positive, then the divider
# started from registers; a norm's divisor shifted by its bit length after the square root (DEN), its leading
# zeros counted (NORM_RECIP, NORM_LZ), then normalized (NORM_SHIFT)
SFU_DIV_SETUP = 3
SFU_NORM_DEN = 1
SFU_NORM_SHIFT = 2  # its leading zeros' groups, then their count
# a read the SFU's FSM asks for itself (a norm's epsilon, a given maximum, RoPE's operands) starts on the eager
# engine from a registered command, the cycle after the state that asks for it
SFU_FSM_READ = 1
# a MAX or SUM part of a blocked softmax (ISA 1.11) queues the statistic it made the cycle after its pass ends, as a
# result, then waits for its write (PASS_END)
SFU_STAT_QUEUE = 1


def recip_wait_cycles(steps: int) -> int:
    """Cycles from the first of softmax's last pass (the divider starting beside it) until the lanes may take a
    chunk: the quotient is in ``steps + 1`` cycles after the divider starts, and the lanes read it SFU_EXP cycles
    after a take."""
    return max(0, steps + 1 - SFU_EXP)


def division_bits(value_bits: int, step_bits: int, width: int) -> int:
    """Quotient bits the SFU's divider walks for a numerator below 2^value_bits: a multiple of ``step_bits``, at most
    the divider's ``width`` (hw/arith.py Divider.bits)."""
    return min(width, -(-value_bits // step_bits) * step_bits)


# In a kernel of several cores each core may sit in its own SLR: every signal between a core and the kernel's shared
# logic (the register file, the barrier) or its masters' ports is registered once on its way, on the crossing
# (hw/kernel.py, hw/crossing.py)
SLR_CROSSING = 1


def crossed(core: HardwareConfig) -> bool:
    """Whether a core (its view, :meth:`HardwareConfig.core`) reaches its masters' ports and its arguments across an
    SLR boundary: in a kernel of several cores, every core but core 0 (the one whose run of masters is the kernel's
    first), which sits beside the ports and the register file (SLR0 on the cards, where the HBM attaches:
    bitstreams/vitis.py ``core_slrs``). Its start, finish, counters and barrier cross either way, so that the
    barrier waits as long for every core."""
    return core.first_master > 0


# a crossed core reaches its masters' ports through register slices (hw/crossing.py ``ReadCrossing``,
# hw/write_router.py): a read's answer, and a write's response, come this much later than the memory gives them
READ_CROSSING_LATENCY = 2 * SLR_CROSSING
# the last core's barrier request to every core's go: the request's crossing, the kernel's AND of them, the go's
# crossing (one core's barrier goes in the cycle it asks)
BARRIER_LATENCY = SLR_CROSSING + 1 + SLR_CROSSING
