// A behavioural model of the Xilinx DSP48E2 for Verilator, of the one configuration flightc instantiates
// (hw/dsp48e2.py): no input or pipeline registers but P, the pre-adder adding D and A[26:0] into the multiplier's
// 27-bit operand, the ALU adding the product to PCIN (OPMODE Z = 001) or to nothing (Z = 000). Vivado builds the
// real primitive; this file is given to Verilator only (sim/rtl/build.py), never to a synthesis tool.
module DSP48E2 #(
  parameter integer AREG = 1, parameter integer BREG = 1, parameter integer CREG = 1, parameter integer DREG = 1,
  parameter integer ADREG = 1, parameter integer MREG = 1, parameter integer PREG = 1,
  parameter integer ACASCREG = 1, parameter integer BCASCREG = 1, parameter integer INMODEREG = 1,
  parameter integer OPMODEREG = 1, parameter integer ALUMODEREG = 1, parameter integer CARRYINREG = 1,
  parameter integer CARRYINSELREG = 1,
  parameter AMULTSEL = "A", parameter BMULTSEL = "B", parameter PREADDINSEL = "A", parameter USE_MULT = "MULTIPLY",
  parameter A_INPUT = "DIRECT", parameter B_INPUT = "DIRECT", parameter USE_SIMD = "ONE48"
) (
  input CLK, input [29:0] A, input [17:0] B, input [26:0] D, input [47:0] PCIN,
  input [8:0] OPMODE, input [3:0] ALUMODE, input [4:0] INMODE, input [2:0] CARRYINSEL, input CARRYIN,
  input CEA1, input CEA2, input CEB1, input CEB2, input CEC, input CED, input CEAD, input CEM, input CEP,
  input CECTRL, input CEINMODE, input CEALUMODE, input CECARRYIN,
  input RSTA, input RSTB, input RSTC, input RSTD, input RSTM, input RSTP, input RSTCTRL, input RSTINMODE,
  input RSTALUMODE, input RSTALLCARRYIN,
  output [47:0] P, output [47:0] PCOUT
);
  initial begin
    if (AREG != 0 || BREG != 0 || CREG != 0 || DREG != 0 || ADREG != 0 || MREG != 0 || ACASCREG != 0
        || BCASCREG != 0 || INMODEREG != 0 || OPMODEREG != 0 || ALUMODEREG != 0 || CARRYINREG != 0
        || CARRYINSELREG != 0 || AMULTSEL != "AD" || BMULTSEL != "B" || PREADDINSEL != "A"
        || USE_MULT != "MULTIPLY" || USE_SIMD != "ONE48")
      $fatal(1, "DSP48E2 model: only flightc's cascade configuration is modeled (hw/dsp48e2_model.v)");
  end
  wire signed [26:0] ad = $signed(D) + $signed(A[26:0]);  // INMODE = 00100: D + A2 (A2 is A: no A register)
  wire signed [44:0] m = ad * $signed(B);
  wire signed [47:0] z = OPMODE[6:4] == 3'b001 ? $signed(PCIN) : 48'sd0;
  wire [47:0] sum = $signed({{3{m[44]}}, m}) + z;
  reg [47:0] p_q = 48'd0;
  always @(posedge CLK) begin
    if (RSTP) p_q <= 48'd0;
    else if (CEP) p_q <= sum;
  end
  assign P = PREG != 0 ? p_q : sum;
  assign PCOUT = P;
endmodule
