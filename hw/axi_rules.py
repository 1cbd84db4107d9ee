"""The AXI4 rules the kernel's masters follow (pure Python: the config and the performance model read them too)."""

AXI_LEN_BITS = 8
AXI_MAX_BEATS = 1 << AXI_LEN_BITS  # INCR bursts of up to 256 beats
AXI_BOUNDARY = 4096  # a burst must not cross a 4 KiB boundary
LD_IN_FLIGHT = 2  # LD instructions in flight at once: the next one's bursts follow the last one's (hw/control.py)
# ST instructions in flight at once: one sending and two awaiting their write responses, so a short ST (a key's two
# pieces) hands off at once while a long one's responses come back and the next long one starts sending
ST_IN_FLIGHT = 3
# ST's second writer: a dealt ST.img_col (a byte of each of many image rows, each row on another master than the one
# before) sends two rows' beats a cycle on two masters where its pairs are dealt round at least 2^ST_PAIRED_GROUPS_LOG2
# of them, so that each master still takes a beat at most every other cycle
ST_PAIRED_GROUPS_LOG2 = 2
# ST's row placer (hw/store_rows.py): the registered steps that work out where a row lies, and the placed rows it
# keeps ahead of the writer (two rows a cycle for every step in flight and the ring's own, with room to spare)
ST_PLACE_STAGES = 9
ST_PLACE_DEPTH = 32
