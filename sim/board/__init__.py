"""The virtual PYNQ board: pynq's remote-device gRPC services, served on loopback and backed by the
functional simulator or by the RTL under Verilator, so the unmodified pynq client can drive it."""
