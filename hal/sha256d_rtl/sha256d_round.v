// sha256d_round.v - one SHA-256 round without its registers, shared by the
// unrolled and the folded pipelines.
//
// The caller forms hkw = h + K[t] + W[t], so that constant parts (K, padding
// words, host-precomputed values) are added once at elaboration or on the
// host instead of per nonce. NEED_A = 0 leaves out the new a (rounds whose a
// no later round reads).
//
// Every addition is a sha256d_add32 (see there why).
//
// Verilog-2005.
`default_nettype none

module sha256d_round #(
    parameter integer NEED_A = 1
) (
    input  wire [31:0] a,
    input  wire [31:0] b,
    input  wire [31:0] c,
    input  wire [31:0] d,
    input  wire [31:0] e,
    input  wire [31:0] f,
    input  wire [31:0] g,
    input  wire [31:0] hkw,     // h + K[t] + W[t]
    output wire [31:0] a_new,
    output wire [31:0] e_new
);
`include "sha256d_functions.vh"

    wire [31:0] sigma_choose;   // S1(e) + Ch(e, f, g)
    wire [31:0] t1;

    sha256d_add32 add_sc (.a(big_sigma1(e)), .b(choose(e, f, g)), .sum(sigma_choose));
    sha256d_add32 add_t1 (.a(hkw), .b(sigma_choose), .sum(t1));
    sha256d_add32 add_e  (.a(d), .b(t1), .sum(e_new));

    generate
        if (NEED_A != 0) begin : with_a
            wire [31:0] t2;     // S0(a) + Maj(a, b, c)
            sha256d_add32 add_t2 (.a(big_sigma0(a)), .b(majority(a, b, c)), .sum(t2));
            sha256d_add32 add_a  (.a(t1), .b(t2), .sum(a_new));
        end else begin : e_only
            assign a_new = 32'd0;
            wire unused_abc = &{1'b0, a, b, c};
        end
    endgenerate

endmodule


`default_nettype wire
