// sha256d_sum4.v - a sum of four 32-bit terms, such as a message schedule word
// W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], where the terms known at
// elaboration (padding words) are summed into CONSTANT and left out of the
// adders. VAR_MASK bit n: term n is a signal. Every addition is a
// sha256d_add32 (see there why).
//
// Verilog-2005.
`default_nettype none

module sha256d_sum4 #(
    parameter [3:0]  VAR_MASK = 4'b1111,   // bit i: term i is a signal
    parameter [31:0] CONSTANT = 32'd0      // sum of the terms that are constants
) (
    input  wire [127:0] terms,              // {term0, term1, term2, term3}
    output wire [31:0]  sum
);

    // Index of the n-th signal term (n = 0..3), or 4 when there is none.
    function integer nth_var;
        input [3:0] mask;
        input integer n;
        integer i, seen;
        begin
            nth_var = 4;
            seen = 0;
            for (i = 0; i < 4; i = i + 1) begin
                if (mask[i]) begin
                    if (seen == n && nth_var == 4)
                        nth_var = i;
                    seen = seen + 1;
                end
            end
        end
    endfunction

    function integer count_vars;
        input [3:0] mask;
        integer i;
        begin
            count_vars = 0;
            for (i = 0; i < 4; i = i + 1)
                if (mask[i])
                    count_vars = count_vars + 1;
        end
    endfunction

    localparam integer VARS = count_vars(VAR_MASK);
    localparam integer V0 = nth_var(VAR_MASK, 0);
    localparam integer V1 = nth_var(VAR_MASK, 1);
    localparam integer V2 = nth_var(VAR_MASK, 2);

    wire [31:0] term [0:3];
    assign term[0] = terms[127:96];
    assign term[1] = terms[95:64];
    assign term[2] = terms[63:32];
    assign term[3] = terms[31:0];

    wire [31:0] signals;        // sum of the signal terms

    generate
        if (VARS == 0) begin : no_signal
            // Elaboration stops here: a sum of constants needs no hardware.
            sha256d_sum4_needs_a_signal_term refuse_to_build ();
        end else if (VARS == 1) begin : one
            assign signals = term[V0];
        end else if (VARS == 2) begin : two
            sha256d_add32 add01 (.a(term[V0]), .b(term[V1]), .sum(signals));
        end else if (VARS == 3) begin : three
            wire [31:0] partial;
            sha256d_add32 add01 (.a(term[V0]), .b(term[V1]), .sum(partial));
            sha256d_add32 add2 (.a(partial), .b(term[V2]), .sum(signals));
        end else begin : four
            wire [31:0] left, right;
            sha256d_add32 add01 (.a(term[0]), .b(term[1]), .sum(left));
            sha256d_add32 add23 (.a(term[2]), .b(term[3]), .sum(right));
            sha256d_add32 add (.a(left), .b(right), .sum(signals));
        end

        if (CONSTANT == 32'd0) begin : no_constant
            assign sum = signals;
        end else if (CONSTANT == 32'h80000000) begin : top_bit
            assign sum = signals ^ 32'h80000000;   // adding 2^31 flips bit 31
        end else begin : with_constant
            sha256d_add32 add_constant (.a(signals), .b(CONSTANT), .sum(sum));
        end
    endgenerate

    // Constant terms arrive as signals too; their values are in CONSTANT.
    wire unused_terms = &{1'b0, terms};

endmodule

`default_nettype wire
