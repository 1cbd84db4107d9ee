"""The cycles the streamed datapath's pipelines take (pure Python: the performance model reads them too).

Each stage's registers are placed so that no path between them is deeper than the logic levels 225 MHz allows
on UltraScale+ (hw/timing.py); the cycles they cost follow from where they are.
"""

# a DSP chain's operands taken to its sums (hw/dsp_chain.py): the operands, the dequantized weight (two steps) and
# packed tokens, the product (M, P), a quarter's sums, the chain's; the MPE accumulates them then, and its last
# step's pipeline (the word's arrival, the chains' go, their sums, the accumulate) follows
CHAIN_LATENCY = 1 + 2 + 2 + 1 + 1
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
