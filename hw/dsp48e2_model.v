// A behavioural model of the Xilinx DSP48E2 for Verilator, of what flightc instantiates (hw/dsp48e2.py): the A, B
// (one or two deep), D, AD, M and P registers on or off, every clock enable as wired, the pre-adder adding D and
// A[26:0] into the multiplier's 27-bit operand, the ALU adding the product to PCIN (OPMODE Z = 001) or to nothing
// (Z = 000). Vivado builds the real primitive; this file is given to Verilator only (sim/rtl/build.py), never to a
// synthesis tool.
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
    if (AREG > 1 || BREG > 2 || CREG != 0 || DREG > 1 || ADREG > 1 || MREG > 1 || PREG > 1
        || INMODEREG != 0 || OPMODEREG != 0 || ALUMODEREG != 0 || CARRYINREG != 0
        || CARRYINSELREG != 0 || AMULTSEL != "AD" || BMULTSEL != "B" || PREADDINSEL != "A"
        || USE_MULT != "MULTIPLY" || USE_SIMD != "ONE48")
      $fatal(1, "DSP48E2 model: only flightc's configurations are modeled (hw/dsp48e2_model.v)");
  end
  reg [29:0] a2_q = 30'd0;
  reg [17:0] b1_q = 18'd0, b2_q = 18'd0;
  reg [26:0] d_q = 27'd0, ad_q = 27'd0;
  reg [44:0] m_q = 45'd0;
  reg [47:0] p_q = 48'd0;
  wire [29:0] a_in = AREG != 0 ? a2_q : A;
  wire [17:0] b_in = BREG != 0 ? b2_q : B;
  wire [26:0] d_in = DREG != 0 ? d_q : D;
  wire signed [26:0] ad = $signed(d_in) + $signed(a_in[26:0]);  // INMODE = 00100: D + A2
  wire signed [26:0] ad_in = ADREG != 0 ? $signed(ad_q) : ad;
  wire signed [44:0] m = ad_in * $signed(b_in);
  wire signed [44:0] m_in = MREG != 0 ? $signed(m_q) : m;
  wire signed [47:0] z = OPMODE[6:4] == 3'b001 ? $signed(PCIN) : 48'sd0;
  wire [47:0] sum = $signed({{3{m_in[44]}}, m_in}) + z;
  always @(posedge CLK) begin
    if (RSTA) a2_q <= 30'd0; else if (CEA2) a2_q <= A;
    if (RSTB) begin b1_q <= 18'd0; b2_q <= 18'd0; end
    else begin
      if (CEB1) b1_q <= B;
      if (CEB2) b2_q <= BREG == 2 ? b1_q : B;
    end
    if (RSTD) d_q <= 27'd0; else if (CED) d_q <= D;
    if (RSTD) ad_q <= 27'd0; else if (CEAD) ad_q <= ad;
    if (RSTM) m_q <= 45'd0; else if (CEM) m_q <= m;
    if (RSTP) p_q <= 48'd0; else if (CEP) p_q <= sum;
  end
  assign P = PREG != 0 ? p_q : sum;
  assign PCOUT = P;
endmodule
