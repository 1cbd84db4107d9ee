"""The instruction set: one table (table.py) and everything derived from it."""
from flightc.isa.codec import Instruction, decode, decode_program, encode, encode_program, iter_program, make
from flightc.isa.table import (BY_NAME, ISA, ISA_VERSION, MiscOp, Opcode, OutMode, Sparsity, SysOp, Unit,
                               WeightBits)

__all__ = ["BY_NAME", "ISA", "ISA_VERSION", "Instruction", "MiscOp", "Opcode", "OutMode", "Sparsity", "SysOp",
           "Unit", "WeightBits", "decode", "decode_program", "encode", "encode_program", "iter_program", "make"]
