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
// Timing: the nonce enters on the issue clock, when stage 0 computes the first
// hash's round 3; stage n computes round n + 3 of the first hash (n <= 60) or
// round n - 61 of the second (n >= 61) n clocks later, and H7 (round 60) is
// valid on the clock LATENCY = 121 after issue, from the last pipeline stage.
//
// Stage registers after round t: {a_t, a_t-1, a_t-2, a_t-3, e_t, e_t-1,
// e_t-2, e_t-3} and the window {W[t+1], ..., W[t+16]} (W[t+16] computed in
// round t). Words that are constant or set by the job are wired in, not
// registered.
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

    // Message word i of a hash (the first hash's words are only asked for i >= 4).
    function integer kind;
        input integer hash;
        input integer i;
        begin
            if (hash == 1)
                kind = (i <= 15) ? KIND_CONST : (i <= 17) ? KIND_JOB : KIND_SIGNAL;
            else
                kind = (i >= 8 && i <= 15) ? KIND_CONST : KIND_SIGNAL;
        end
    endfunction

    // Schedule word i >= 16 from the terms {s1(W[i-2]), W[i-7], s0(W[i-15]), W[i-16]}:
    // which terms are signals (bit n = term n), and the sum of the constant ones.
    function [3:0] var_mask;
        input integer hash;
        input integer i;
        begin
            var_mask = {kind(hash, i - 16) != KIND_CONST, kind(hash, i - 15) != KIND_CONST,
                        kind(hash, i - 7) != KIND_CONST, kind(hash, i - 2) != KIND_CONST};
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

    genvar n, k;

    wire [31:0] pre_w [0:15];
    generate
        for (k = 0; k < 16; k = k + 1) begin : pre_words
            assign pre_w[k] = pre[511 - 32 * k -: 32];
        end
    endgenerate

    // ------------------------------------------------------------------
    // Stages 0..60: the first hash, round 3 (on the issue clock) to round 63.
    // Stages 61..120: the second hash, rounds 0..59. Round 60 follows.
    // ------------------------------------------------------------------
    localparam integer STAGES = 121;
    wire [255:0] st  [0:STAGES-1];
    wire [511:0] win [0:STAGES-1];
    wire [511:0] msg2;              // the second hash's block: first digest and padding

    wire [31:0] w3 = {nonce[7:0], nonce[15:8], nonce[23:16], nonce[31:24]};
    wire [31:0] a3, e3, w18, w19;
    sha256d_add32 add_a3 (.a(pre_w[P_A3]), .b(w3), .sum(a3));
    sha256d_add32 add_e3 (.a(pre_w[P_E3]), .b(w3), .sum(e3));
    sha256d_add32 add_w18 (.a(pre_w[P_P18]), .b(small_sigma0(w3)), .sum(w18));
    sha256d_add32 add_w19 (.a(pre_w[P_P19]), .b(w3), .sum(w19));

    generate
        for (n = 0; n < STAGES; n = n + 1) begin : stage
            localparam integer HASH = (n <= 60) ? 1 : 2;
            localparam integer T = (HASH == 1) ? n + 3 : n - 61;     // its round
            localparam integer LAST_WORD = (HASH == 1) ? 63 : 60;    // last W the hash reads
            localparam integer PREV = (n == 0) ? 0 : n - 1;
            localparam [5:0] T6 = T[5:0];

            wire [511:0] w;             // {W[T], ..., W[T+15]} on this stage's clock
            wire [31:0] a_new, e_new;   // round T
            wire [31:0] w_new;          // W[T+16]
            if (HASH == 2 && T == 0) begin : from_digest
                assign w = msg2;
            end else begin : from_window
                assign w = win[PREV];
            end

            if (HASH == 1 && T == 3) begin : issue
                assign a_new = a3;
                assign e_new = e3;
            end else if (HASH == 2 && T == 0) begin : iv_round
                sha256d_add32 add_a (.a(w[511:480]), .b(A0_CONST), .sum(a_new));
                sha256d_add32 add_e (.a(w[511:480]), .b(E0_CONST), .sum(e_new));
            end else begin : round
                wire [255:0] s = st[PREV];
                wire [31:0] hkw;        // h + K[T] + W[T], with what is constant added up
                if (HASH == 1 && T <= 6) begin : host_hkw
                    assign hkw = pre_w[P_R4 + T - 4];
                end else if (HASH == 2 && T <= 3) begin : iv_h       // h = e[T-4], the IV
                    sha256d_add32 add_hkw (.a(w[511:480]), .b(sha256_iv(7 - T) + sha256_k(T6)),
                                           .sum(hkw));
                end else if (kind(HASH, T) == KIND_CONST) begin : constant_kw
                    sha256d_add32 add_hkw (.a(s[31:0]), .b(sha256_k(T6) + pad_word(HASH, T)),
                                           .sum(hkw));
                end else begin : signal_kw
                    wire [31:0] kw;
                    sha256d_add32 add_kw (.a(w[511:480]), .b(sha256_k(T6)), .sum(kw));
                    sha256d_add32 add_hkw (.a(s[31:0]), .b(kw), .sum(hkw));
                end
                sha256d_round #(.NEED_A((HASH == 1 || T <= 56) ? 1 : 0)) rnd (
                    .a(s[255:224]), .b(s[223:192]), .c(s[191:160]), .d(s[159:128]),
                    .e(s[127:96]), .f(s[95:64]), .g(s[63:32]), .hkw(hkw),
                    .a_new(a_new), .e_new(e_new)
                );
                wire unused_h = &{1'b0, s[31:0]};
            end

            if (HASH == 1 && T == 3) begin : w19_from_host
                assign w_new = w19;
            end else if (HASH == 1 && (T + 16 == 31 || T + 16 == 32)) begin : host_partial
                // W31 = s1(W29) + W24 + p31, W32 = s1(W30) + W25 + p32
                sha256d_sum4 #(.VAR_MASK(4'b0111), .CONSTANT(32'd0)) schedule_sum (
                    .terms({small_sigma1(w[63:32]), w[223:192],
                            pre_w[T + 16 == 31 ? P_P31 : P_P32], 32'd0}),
                    .sum(w_new)
                );
            end else if (T + 16 <= LAST_WORD) begin : schedule
                sha256d_sum4 #(
                    .VAR_MASK(var_mask(HASH, T + 16)), .CONSTANT(constant_terms(HASH, T + 16))
                ) schedule_sum (
                    .terms({small_sigma1(w[63:32]), w[223:192], small_sigma0(w[479:448]),
                            w[511:480]}),
                    .sum(w_new)
                );
            end else begin : past_last_word
                assign w_new = 32'd0;
            end
            wire unused_w = &{1'b0, w, w_new};

            // State registers. a[T-k] and e[T-k] are job registers in the first hash up to
            // k = 2 (e0 is only read inside R4), IV words in the second hash before round 0.
            reg [31:0] a_q, e_q;
            always @(posedge clk) begin
                a_q <= a_new;
                e_q <= e_new;
            end
            assign st[n][255:224] = a_q;
            assign st[n][127:96]  = e_q;
            for (k = 1; k <= 3; k = k + 1) begin : chain
                if (HASH == 1 && T - k <= 2) begin : from_job
                    assign st[n][255 - 32 * k -: 32] = pre_w[P_AX + T - k];
                    assign st[n][127 - 32 * k -: 32] = (T - k == 0) ? 32'd0 : pre_w[P_EX + T - k];
                end else if (HASH == 2 && T - k < 0) begin : from_iv  // a[-m] = H[m-1], e[-m] = H[m+3]
                    assign st[n][255 - 32 * k -: 32] = sha256_iv(k - T - 1);
                    assign st[n][127 - 32 * k -: 32] = sha256_iv(k - T + 3);
                end else begin : pipelined
                    reg [31:0] a_k, e_k;
                    always @(posedge clk) begin
                        a_k <= st[PREV][255 - 32 * (k - 1) -: 32];
                        e_k <= st[PREV][127 - 32 * (k - 1) -: 32];
                    end
                    assign st[n][255 - 32 * k -: 32] = a_k;
                    assign st[n][127 - 32 * k -: 32] = e_k;
                end
            end

            // Window registers: only words that differ per nonce are registered.
            for (k = 0; k < 16; k = k + 1) begin : window
                if (T + 1 + k > LAST_WORD) begin : unused_word
                    assign win[n][511 - 32 * k -: 32] = 32'd0;
                end else if (kind(HASH, T + 1 + k) == KIND_CONST) begin : constant_word
                    assign win[n][511 - 32 * k -: 32] = pad_word(HASH, T + 1 + k);
                end else if (kind(HASH, T + 1 + k) == KIND_JOB) begin : job_word
                    assign win[n][511 - 32 * k -: 32] = pre_w[P_W16 + T + 1 + k - 16];
                end else begin : signal_word
                    reg [31:0] w_q;
                    always @(posedge clk) begin
                        if (k == 15)
                            w_q <= w_new;
                        else if (HASH == 1 && T == 3)
                            w_q <= w18;                    // the only other one: W18
                        else
                            w_q <= w[511 - 32 * (k + 1) -: 32];
                    end
                    assign win[n][511 - 32 * k -: 32] = w_q;
                end
            end
        end
    endgenerate

    // ------------------------------------------------------------------
    // Feed-forward: the first digest is the second hash's message W0..W7.
    // ------------------------------------------------------------------
    generate
        for (k = 0; k < 8; k = k + 1) begin : feed_forward
            sha256d_add32 add_x (.a(midstate[255 - 32 * k -: 32]), .b(st[60][255 - 32 * k -: 32]),
                                 .sum(msg2[511 - 32 * k -: 32]));
        end
        for (k = 8; k < 16; k = k + 1) begin : digest_padding
            assign msg2[511 - 32 * k -: 32] = digest_pad_word(k);
        end
    endgenerate
    assign first_digest = msg2[511:256];

    // Round 60, e only, with IV7 folded into K60: its e is H7.
    wire [255:0] s60 = st[STAGES-1];
    wire [31:0]  kw60, hkw60, unused_a60;
    sha256d_add32 add_kw60 (.a(win[STAGES-1][511:480]), .b(sha256_k(6'd60) + sha256_iv(7)),
                            .sum(kw60));
    sha256d_add32 add_hkw60 (.a(s60[31:0]), .b(kw60), .sum(hkw60));
    sha256d_round #(.NEED_A(0)) round60 (
        .a(s60[255:224]), .b(s60[223:192]), .c(s60[191:160]), .d(s60[159:128]),
        .e(s60[127:96]), .f(s60[95:64]), .g(s60[63:32]), .hkw(hkw60),
        .a_new(unused_a60), .e_new(h7)
    );
    wire unused_round60 = &{1'b0, unused_a60, win[STAGES-1][479:0]};

endmodule

`default_nettype wire
