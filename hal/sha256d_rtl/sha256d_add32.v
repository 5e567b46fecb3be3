// sha256d_add32.v - a 32-bit two-operand adder kept as its own module.
//
// Why a module of one line: yosys merges chains of additions whose partial
// sums have one reader into one multi-operand adder and builds it as a
// carry-save tree: on iCE40 that costs two LUT4 per bit for every operand
// beyond the second. Kept apart (keep_hierarchy), each addition maps to a
// carry chain: 32 LUT4 and 31 SB_CARRY. For the sums of a SHA-256 round
// (five operands for T1, three for the new a, four for W[t]) the chains take
// about a third fewer LUT4. Simulators flatten it like any other module.
//
// Verilog-2005.
`default_nettype none

(* keep_hierarchy *)
module sha256d_add32 (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] sum
);
    assign sum = a + b;
endmodule

`default_nettype wire
