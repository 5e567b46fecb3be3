// sha256d_k_table.v - the round constants K[BASE + index] of a folded stage.
//
// Why not one case table: a 64-entry table of 32-bit words is 32 functions of
// 6 inputs, and yosys/abc maps it to about 250 LUT4 on iCE40. Split into
// 16-entry tables (sha256d_k16, one LUT4 per bit each) and a multiplexer on
// the top index bits, it takes 192.
//
// Verilog-2005.
`default_nettype none

module sha256d_k_table #(
    parameter integer BASE = 0,          // first round of the stage
    parameter integer INDEX_BITS = 1     // 1..6: the stage runs 2**INDEX_BITS rounds
) (
    input  wire [INDEX_BITS-1:0] index,
    output wire [31:0]           k        // K[BASE + index]
);
`include "sha256d_functions.vh"

    generate
        if (INDEX_BITS <= 4) begin : direct
            localparam [5:0] BASE6 = BASE[5:0];
            assign k = sha256_k(BASE6 + {{(6 - INDEX_BITS){1'b0}}, index});
        end else begin : split
            localparam integer PARTS = 1 << (INDEX_BITS - 4);
            wire [31:0] part [0:PARTS-1];
            genvar p;
            for (p = 0; p < PARTS; p = p + 1) begin : parts
                sha256d_k16 #(.BASE(BASE + 16 * p)) table16 (.index(index[3:0]), .k(part[p]));
            end
            assign k = part[index[INDEX_BITS-1:4]];
        end
    endgenerate

endmodule

`default_nettype wire
