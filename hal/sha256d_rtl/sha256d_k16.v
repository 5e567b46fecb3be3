// sha256d_k16.v - 16 consecutive round constants K[BASE .. BASE+15], one LUT4
// per bit. Kept as its own module so that abc does not merge the tables of a
// sha256d_k_table back into one 6-input function per bit (see there).
//
// Verilog-2005.
`default_nettype none

(* keep_hierarchy *)
module sha256d_k16 #(
    parameter integer BASE = 0           // K[BASE .. BASE+15]
) (
    input  wire [3:0]  index,
    output wire [31:0] k
);
`include "sha256d_functions.vh"
    localparam [5:0] BASE6 = BASE[5:0];
    assign k = sha256_k(BASE6 + {2'b00, index});
endmodule

`default_nettype wire
