"""Exceptions with messages a user can act on: each names the layer, field or limit at fault."""


class FlightcError(Exception):
    """Base class of every error flightc raises on purpose."""


class ConfigError(FlightcError):
    """A hardware configuration is inconsistent or exceeds what the ISA can address."""


class EncodingError(FlightcError):
    """An instruction field is out of range, unknown, or a reserved bit is set."""


class UnsupportedError(FlightcError):
    """The model uses an op, shape, bit width or length that the target cannot run."""


class OnChipError(UnsupportedError):
    """A step's tensors do not fit an on-chip buffer of the preset (a shorter step or a larger preset would)."""


class BundleError(FlightcError):
    """A program bundle is malformed or was built for another ISA version or hardware configuration."""


class ProgramError(FlightcError):
    """A program violates the machine's rules: deadlock, unbalanced tokens, a read racing a write."""


class MemoryRangeError(ProgramError):
    """A program reaches past the memory a channel has (its used extent, or the buffer it points into)."""
