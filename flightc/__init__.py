"""flightc: compile compressed LLMs for FlightLLM-style FPGA accelerators and run them bit-exactly."""

__version__ = "0.1.0"
