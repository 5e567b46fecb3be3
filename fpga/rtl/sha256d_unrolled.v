// sha256d_unrolled.v - the fully unrolled SHA-256d datapath (FOLD = 1): one
// round per pipeline stage, one nonce per clock.
//
// What it leaves out because it is the same for every nonce of a job:
// - Rounds 0..2 of the header's second block and the nonce-free part of
//   round 3 (they depend on the midstate and header bytes 64..75 only): the
//   host computes them (`pre`, fpga/README.md), so the first hash starts with
//   a3 = PRE_A3 + W3 and e3 = PRE_E3 + W3 (W3 = the nonce word).
// - Schedule words and round inputs that only depend on the job: W16, W17,
//   p18, p19, p31, p32 and h + K + W of rounds 4..6 come from the host; the
//   padding words of both hashes and the second hash's IV are constants, and
//   whatever they add up to is summed at elaboration.
// - The end of the second hash: the match rule only reads H7 = IV7 + e60, so
//   rounds 57..60 keep only the e half and rounds 61..63 are not built; IV7 is
//   folded into K60.
// The host re-checks every reported nonce with hashlib (hal/sha256d_core.py).
//
// Timing: the nonce enters on the issue clock, when the first hash's round 3
// is computed; round t of the first hash is computed t - 3 clocks later, round
// t of the second hash 61 + t clocks later, and H7 (round 60) is valid on the
// clock LATENCY = 121 after issue, from the last pipeline register.
//
// State after round t: {a_t, a_t-1, a_t-2, a_t-3, e_t, e_t-1, e_t-2, e_t-3}.
// Window after round t: {W[t+1], ..., W[t+16]} (W[t+16] computed in round t).
// Words that are constant or set by the job are wired in, not registered.
//
// Verilog-2005.
`default_nettype none

module sha256d_unrolled (
    input  wire         clk,
    input  wire [255:0] midstate,      // {H0, ..., H7} after header bytes 0..63
    input  wire [511:0] pre,           // host precomputation {PRE_A3, PRE_E3, A0, ..., P32}
    input  wire [31:0]  nonce,         // nonce issued on this clock (header value)
    output wire [31:0]  h7,            // H7 of the nonce issued LATENCY clocks ago
    output wire [255:0] first_digest   // first digest of the nonce issued 61 clocks ago
);
`include "sha256d_functions.vh"

    // Word indices in `pre` (fpga/README.md, PRE block).
    localparam integer P_A3 = 0;      // PRE_A3
    localparam integer P_E3 = 1;      // PRE_E3
    localparam integer P_AX = 2;      // A0, A1, A2 at 2..4
    localparam integer P_EX = 4;      // E1, E2 at 5..6 (index P_EX + k for e_k)
    localparam integer P_R4 = 7;      // R4, R5, R6 at 7..9
    localparam integer P_W16 = 10;    // W16, W17 at 10..11
    localparam integer P_P18 = 12;
    localparam integer P_P19 = 13;
    localparam integer P_P31 = 14;
    localparam integer P_P32 = 15;

    localparam integer KIND_CONST = 0;   // known at elaboration
    localparam integer KIND_JOB = 1;     // a job register
    localparam integer KIND_SIGNAL = 2;  // differs per nonce: pipelined

    // First hash, message word i >= 4.
    function integer kind1;
        input integer i;
        begin
            kind1 = (i <= 15) ? KIND_CONST : (i <= 17) ? KIND_JOB : KIND_SIGNAL;
        end
    endfunction

    // Second hash, message word i.
    function integer kind2;
        input integer i;
        begin
            kind2 = (i >= 8 && i <= 15) ? KIND_CONST : KIND_SIGNAL;
        end
    endfunction

    // Schedule word i >= 16 from the terms {s1(W[i-2]), W[i-7], s0(W[i-15]), W[i-16]}:
    // which terms are signals (bit n = term n), and the sum of the constant ones.
    function [3:0] var_mask;
        input integer hash;
        input integer i;
        begin
            if (hash == 1)
                var_mask = {kind1(i - 16) != KIND_CONST, kind1(i - 15) != KIND_CONST,
                            kind1(i - 7) != KIND_CONST, kind1(i - 2) != KIND_CONST};
            else
                var_mask = {kind2(i - 16) != KIND_CONST, kind2(i - 15) != KIND_CONST,
                            kind2(i - 7) != KIND_CONST, kind2(i - 2) != KIND_CONST};
        end
    endfunction

    function [31:0] pad_word;
        input integer hash;
        input integer i;
        begin
            pad_word = (hash == 1) ? header_pad_word(i) : digest_pad_word(i);
        end
    endfunction

    function [31:0] constant_terms;
        input integer hash;
        input integer i;
        reg [3:0] mask;
        begin
            mask = var_mask(hash, i);
            constant_terms = (mask[0] ? 32'd0 : small_sigma1(pad_word(hash, i - 2)))
                           + (mask[1] ? 32'd0 : pad_word(hash, i - 7))
                           + (mask[2] ? 32'd0 : small_sigma0(pad_word(hash, i - 15)))
                           + (mask[3] ? 32'd0 : pad_word(hash, i - 16));
        end
    endfunction

    // Second hash, round 0 on the constant IV: a0 = X0 + A0_CONST, e0 = X0 + E0_CONST.
    localparam [31:0] T1_0 = sha256_iv(7) + big_sigma1(sha256_iv(4))
                           + choose(sha256_iv(4), sha256_iv(5), sha256_iv(6)) + sha256_k(6'd0);
    localparam [31:0] A0_CONST = T1_0 + big_sigma0(sha256_iv(0))
                               + majority(sha256_iv(0), sha256_iv(1), sha256_iv(2));
    localparam [31:0] E0_CONST = sha256_iv(3) + T1_0;

    genvar t, k;

    wire [31:0] pre_w [0:15];
    generate
        for (k = 0; k < 16; k = k + 1) begin : pre_words
            assign pre_w[k] = pre[511 - 32 * k -: 32];
        end
    endgenerate

    // ------------------------------------------------------------------
    // First hash: round 3 on the issue clock, then rounds 4..63.
    // ------------------------------------------------------------------
    wire [255:0] st1  [3:63];
    wire [511:0] win1 [3:63];

    wire [31:0] w3 = {nonce[7:0], nonce[15:8], nonce[23:16], nonce[31:24]};
    wire [31:0] a3, e3, w18, w19;
    sha256d_add32 add_a3 (.a(pre_w[P_A3]), .b(w3), .sum(a3));
    sha256d_add32 add_e3 (.a(pre_w[P_E3]), .b(w3), .sum(e3));
    sha256d_add32 add_w18 (.a(pre_w[P_P18]), .b(small_sigma0(w3)), .sum(w18));
    sha256d_add32 add_w19 (.a(pre_w[P_P19]), .b(w3), .sum(w19));

    generate
        for (t = 3; t <= 63; t = t + 1) begin : hash1
            wire [31:0] a_new, e_new;     // round t
            wire [31:0] w_new;            // W[t+16]
            if (t == 3) begin : issue
                assign a_new = a3;
                assign e_new = e3;
                assign w_new = w19;
            end else begin : round
                wire [255:0] s = st1[t-1];
                wire [511:0] w = win1[t-1];            // {W[t], ..., W[t+15]}
                wire [31:0] hkw;
                if (t <= 6) begin : host_hkw
                    assign hkw = pre_w[P_R4 + t - 4];
                end else if (t <= 15) begin : constant_kw
                    sha256d_add32 add_hkw (.a(s[31:0]), .b(sha256_k(t) + header_pad_word(t)),
                                           .sum(hkw));
                end else begin : signal_kw
                    wire [31:0] kw;
                    sha256d_add32 add_kw (.a(w[511:480]), .b(sha256_k(t)), .sum(kw));
                    sha256d_add32 add_hkw (.a(s[31:0]), .b(kw), .sum(hkw));
                end
                sha256d_round #(.NEED_A(1)) rnd (
                    .a(s[255:224]), .b(s[223:192]), .c(s[191:160]), .d(s[159:128]),
                    .e(s[127:96]), .f(s[95:64]), .g(s[63:32]), .hkw(hkw),
                    .a_new(a_new), .e_new(e_new)
                );
                if (t + 16 == 31 || t + 16 == 32) begin : host_partial
                    // W31 = s1(W29) + W24 + p31, W32 = s1(W30) + W25 + p32
                    sha256d_sum4 #(.VAR_MASK(4'b0111), .CONSTANT(32'd0)) schedule_sum (
                        .terms({small_sigma1(w[63:32]), w[223:192],
                                pre_w[t + 16 == 31 ? P_P31 : P_P32], 32'd0}),
                        .sum(w_new)
                    );
                end else if (t + 16 <= 63) begin : schedule
                    sha256d_sum4 #(
                        .VAR_MASK(var_mask(1, t + 16)), .CONSTANT(constant_terms(1, t + 16))
                    ) schedule_sum (
                        .terms({small_sigma1(w[63:32]), w[223:192],
                                small_sigma0(w[479:448]), w[511:480]}),
                        .sum(w_new)
                    );
                end else begin : past_63
                    assign w_new = 32'd0;
                end
                wire unused_h = &{1'b0, s[31:0], w};
            end
            wire unused_w_new = &{1'b0, w_new};   // W[64..79] are not built

            // State registers: a_k and e_k for k <= 2 are job registers.
            reg [31:0] a_q, e_q;
            always @(posedge clk) begin
                a_q <= a_new;
                e_q <= e_new;
            end
            assign st1[t][255:224] = a_q;
            assign st1[t][127:96]  = e_q;
            for (k = 1; k <= 3; k = k + 1) begin : chain
                if (t - k <= 2) begin : from_job
                    assign st1[t][255 - 32 * k -: 32] = pre_w[P_AX + t - k];
                    if (t - k == 0) begin : e0_unread     // h of round 4: inside R4
                        assign st1[t][127 - 32 * k -: 32] = 32'd0;
                    end else begin : e_job
                        assign st1[t][127 - 32 * k -: 32] = pre_w[P_EX + t - k];
                    end
                end else begin : pipelined
                    reg [31:0] a_k, e_k;
                    always @(posedge clk) begin
                        a_k <= st1[t-1][255 - 32 * (k - 1) -: 32];
                        e_k <= st1[t-1][127 - 32 * (k - 1) -: 32];
                    end
                    assign st1[t][255 - 32 * k -: 32] = a_k;
                    assign st1[t][127 - 32 * k -: 32] = e_k;
                end
            end

            // Window registers: only words that differ per nonce are registered.
            for (k = 0; k < 16; k = k + 1) begin : window
                if (t + 1 + k > 63) begin : unused_word
                    assign win1[t][511 - 32 * k -: 32] = 32'd0;
                end else if (kind1(t + 1 + k) == KIND_CONST) begin : constant_word
                    assign win1[t][511 - 32 * k -: 32] = header_pad_word(t + 1 + k);
                end else if (kind1(t + 1 + k) == KIND_JOB) begin : job_word
                    assign win1[t][511 - 32 * k -: 32] = pre_w[P_W16 + t + 1 + k - 16];
                end else begin : signal_word
                    reg [31:0] w_q;
                    always @(posedge clk) begin
                        if (k == 15)
                            w_q <= w_new;
                        else if (t == 3)
                            w_q <= w18;                    // the only other one: W18
                        else
                            w_q <= win1[t-1][511 - 32 * (k + 1) -: 32];
                    end
                    assign win1[t][511 - 32 * k -: 32] = w_q;
                end
            end
        end
    endgenerate

    // ------------------------------------------------------------------
    // Feed-forward: the first digest is the second hash's message W0..W7.
    // ------------------------------------------------------------------
    wire [511:0] msg2;
    generate
        for (k = 0; k < 8; k = k + 1) begin : feed_forward
            sha256d_add32 add_x (.a(midstate[255 - 32 * k -: 32]), .b(st1[63][255 - 32 * k -: 32]),
                                 .sum(msg2[511 - 32 * k -: 32]));
        end
        for (k = 8; k < 16; k = k + 1) begin : digest_padding
            assign msg2[511 - 32 * k -: 32] = digest_pad_word(k);
        end
    endgenerate
    assign first_digest = msg2[511:256];

    // ------------------------------------------------------------------
    // Second hash: rounds 0..59 pipelined, round 60 (e only) on the last clock.
    // ------------------------------------------------------------------
    wire [255:0] st2  [0:59];
    wire [511:0] win2 [0:59];

    generate
        for (t = 0; t <= 59; t = t + 1) begin : hash2
            wire [511:0] w;                                   // {W[t], ..., W[t+15]}
            if (t == 0) begin : from_digest
                assign w = msg2;
            end else begin : from_window
                assign w = win2[t-1];
            end
            wire [31:0] a_new, e_new, w_new;
            if (t == 0) begin : iv_round
                sha256d_add32 add_a (.a(w[511:480]), .b(A0_CONST), .sum(a_new));
                sha256d_add32 add_e (.a(w[511:480]), .b(E0_CONST), .sum(e_new));
            end else begin : round
                wire [255:0] s = st2[t-1];
                wire [31:0] hkw;
                if (t <= 3) begin : constant_h            // h = e[t-4], still the IV
                    sha256d_add32 add_hkw (.a(w[511:480]), .b(sha256_iv(7 - t) + sha256_k(t)),
                                           .sum(hkw));
                end else if (t >= 8 && t <= 15) begin : constant_kw
                    sha256d_add32 add_hkw (.a(s[31:0]), .b(sha256_k(t) + digest_pad_word(t)),
                                           .sum(hkw));
                end else begin : signal_kw
                    wire [31:0] kw;
                    sha256d_add32 add_kw (.a(w[511:480]), .b(sha256_k(t)), .sum(kw));
                    sha256d_add32 add_hkw (.a(s[31:0]), .b(kw), .sum(hkw));
                end
                sha256d_round #(.NEED_A((t <= 56) ? 1 : 0)) rnd (
                    .a(s[255:224]), .b(s[223:192]), .c(s[191:160]), .d(s[159:128]),
                    .e(s[127:96]), .f(s[95:64]), .g(s[63:32]), .hkw(hkw),
                    .a_new(a_new), .e_new(e_new)
                );
                wire unused_h = &{1'b0, s[31:0]};
            end
            wire unused_w = &{1'b0, w};
            if (t + 16 <= 60) begin : schedule
                sha256d_sum4 #(
                    .VAR_MASK(var_mask(2, t + 16)), .CONSTANT(constant_terms(2, t + 16))
                ) schedule_sum (
                    .terms({small_sigma1(w[63:32]), w[223:192], small_sigma0(w[479:448]),
                            w[511:480]}),
                    .sum(w_new)
                );
            end else begin : past_60
                assign w_new = 32'd0;
            end

            reg [31:0] a_q, e_q;
            always @(posedge clk) begin
                a_q <= a_new;
                e_q <= e_new;
            end
            assign st2[t][255:224] = a_q;
            assign st2[t][127:96]  = e_q;
            for (k = 1; k <= 3; k = k + 1) begin : chain
                if (t - k < 0) begin : from_iv         // a[-n] = H[n-1], e[-n] = H[n+3]
                    assign st2[t][255 - 32 * k -: 32] = sha256_iv(k - t - 1);
                    assign st2[t][127 - 32 * k -: 32] = sha256_iv(k - t + 3);
                end else begin : pipelined
                    reg [31:0] a_k, e_k;
                    always @(posedge clk) begin
                        a_k <= st2[t-1][255 - 32 * (k - 1) -: 32];
                        e_k <= st2[t-1][127 - 32 * (k - 1) -: 32];
                    end
                    assign st2[t][255 - 32 * k -: 32] = a_k;
                    assign st2[t][127 - 32 * k -: 32] = e_k;
                end
            end

            for (k = 0; k < 16; k = k + 1) begin : window
                if (t + 1 + k > 60) begin : unused_word
                    assign win2[t][511 - 32 * k -: 32] = 32'd0;
                end else if (kind2(t + 1 + k) == KIND_CONST) begin : constant_word
                    assign win2[t][511 - 32 * k -: 32] = digest_pad_word(t + 1 + k);
                end else begin : signal_word
                    reg [31:0] w_q;
                    always @(posedge clk) begin
                        if (k == 15)
                            w_q <= w_new;
                        else
                            w_q <= w[511 - 32 * (k + 1) -: 32];
                    end
                    assign win2[t][511 - 32 * k -: 32] = w_q;
                end
            end
        end
    endgenerate

    // Round 60, e only, with IV7 folded into K60: its e is H7.
    wire [255:0] s60 = st2[59];
    wire [31:0]  kw60, hkw60, unused_a60;
    sha256d_add32 add_kw60 (.a(win2[59][511:480]), .b(sha256_k(6'd60) + sha256_iv(7)),
                            .sum(kw60));
    sha256d_add32 add_hkw60 (.a(s60[31:0]), .b(kw60), .sum(hkw60));
    sha256d_round #(.NEED_A(0)) round60 (
        .a(s60[255:224]), .b(s60[223:192]), .c(s60[191:160]), .d(s60[159:128]),
        .e(s60[127:96]), .f(s60[95:64]), .g(s60[63:32]), .hkw(hkw60),
        .a_new(unused_a60), .e_new(h7)
    );
    wire unused_round60 = &{1'b0, unused_a60, win2[59][479:0]};

endmodule

`default_nettype wire
