// A behavioural model of the Xilinx LUT6 for Verilator (hw/lut6.py instantiates it as a 4:1 multiplexer): the
// output is the INIT bit its six inputs address. Vivado builds the real primitive; this file is given to Verilator
// only (sim/rtl/build.py), never to a synthesis tool.
module LUT6 #(parameter [63:0] INIT = 64'h0) (input I0, input I1, input I2, input I3, input I4, input I5, output O);
  assign O = INIT[{I5, I4, I3, I2, I1, I0}];
endmodule
