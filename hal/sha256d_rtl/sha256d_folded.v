// sha256d_folded.v - the folded SHA-256d datapath (FOLD = 2..64): each hash is
// 64/FOLD stages of FOLD rounds, one round per clock, and a nonce enters every
// FOLD clocks. All stages hand over together on the tick clock (phase 0).
//
// A stage keeps the state (256 bits) and a history of the message words it
// consumed in the last 16 clocks; it does not carry a message window of its
// own. On the tick clock it takes its predecessor's state (a 2:1 multiplexer
// on 256 bits) but no window: W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]
// reads each of its four words from the history of whichever stage consumed
// it, 2, 7, 15 or 16 clocks ago (one 2:1 multiplexer per term at most, by
// phase). Handing over a 512-bit window instead costs a 512-bit multiplexer per
// stage: for folded stages this is what the history saves.
//
// The end of the second hash: the match rule only reads H7 = IV7 + e60. With
// FOLD <= 4, round 60 (e only) is computed on the tick clock from the stage
// that ends with round 59, and later stages are not built; with FOLD >= 8 the
// last stage's e after round 60 is read at phase FOLD - 3.
//
// Timing (clock 0 = the issue clock, a tick): the first hash runs on clocks
// 0..63 (stage j on clocks j*FOLD .. j*FOLD+FOLD-1), the second from clock 64.
// H7 is valid on clock 124 (FOLD <= 4) or 125 (FOLD >= 8).
//
// Verilog-2005.
`default_nettype none

module sha256d_folded #(
    parameter integer FOLD = 4                 // 2, 4, 8, 16, 32 or 64
) (
    input  wire                     clk,
    input  wire [$clog2(FOLD)-1:0]  phase,     // 0 (tick) .. FOLD-1
    input  wire [255:0]             midstate,  // {H0, ..., H7} after header bytes 0..63
    input  wire [95:0]              tail,      // {W0, W1, W2}: header bytes 64..75
    input  wire [31:0]              nonce,     // nonce issued on this tick (header value)
    output wire [31:0]              h7,        // H7 of the nonce in the last position
    output wire [255:0]             first_digest  // on a tick: the nonce entering hash 2
);
`include "sha256d_functions.vh"

    localparam integer PHASE_BITS = $clog2(FOLD);
    localparam integer STAGES = 64 / FOLD;                           // first hash
    localparam integer STAGES2 = (FOLD <= 4) ? 60 / FOLD : STAGES;   // second hash
    localparam [255:0] SHA256_IV = {
        32'h6a09e667, 32'hbb67ae85, 32'h3c6ef372, 32'ha54ff53a,
        32'h510e527f, 32'h9b05688c, 32'h1f83d9ab, 32'h5be0cd19
    };

    // Stage offset and threshold of schedule term k (2, 7, 15 or 16 words back):
    // at phase p the word was consumed by stage j - ceil((k - p) / FOLD) when
    // p < k, else by stage j itself, and sits at depth k - 1 of its history.
    function integer far_offset;        // the offset at phase 0
        input integer k;
        begin
            far_offset = (k + FOLD - 1) / FOLD;
        end
    endfunction

    function integer near_from;         // first phase that reads one stage closer
        input integer k;
        begin
            near_from = k - (far_offset(k) - 1) * FOLD;
        end
    endfunction

    localparam integer LAST_PHASE_INT = FOLD - 1;
    localparam [PHASE_BITS-1:0] LAST_PHASE = LAST_PHASE_INT[PHASE_BITS-1:0];
    wire tick = (phase == {PHASE_BITS{1'b0}});
    wire last_phase = (phase == LAST_PHASE);   // stages hand over their nonce and digest words

    genvar j, k;

    // ------------------------------------------------------------------
    // Per-stage nonce word (W3) and first-digest words (W0..W7 of hash 2):
    // held from the tick that brings the nonce into a stage until it leaves.
    // ------------------------------------------------------------------
    localparam integer NONCE_STAGES = 3 / FOLD + 1;        // stages up to the one with round 3
    localparam integer DIGEST_STAGES = (7 / FOLD) + 1;     // stages of hash 2 reading W0..W7
    reg  [31:0]  nonce_q  [0:NONCE_STAGES-1];
    reg  [255:0] digest_q [0:DIGEST_STAGES-1];
    wire [255:0] digest_in;

    always @(posedge clk) begin
        if (tick) begin
            nonce_q[0]  <= nonce;
            digest_q[0] <= digest_in;
        end
    end
    generate
        for (j = 1; j < NONCE_STAGES; j = j + 1) begin : nonce_pipe
            always @(posedge clk)
                if (last_phase)
                    nonce_q[j] <= nonce_q[j-1];
        end
        for (j = 1; j < DIGEST_STAGES; j = j + 1) begin : digest_pipe
            always @(posedge clk)
                if (last_phase)
                    digest_q[j] <= digest_q[j-1];
        end
    endgenerate

    // ------------------------------------------------------------------
    // K[t] of the round each stage position runs on this clock: stage j of the
    // first hash and stage j of the second run the same round, so they share
    // one table (with FOLD = 64, a 64-entry table of about 200 LUT4).
    // ------------------------------------------------------------------
    wire [31:0] k_now [0:STAGES-1];
    generate
        for (j = 0; j < STAGES; j = j + 1) begin : round_constants
            sha256d_k_table #(.BASE(j * FOLD), .INDEX_BITS(PHASE_BITS)) k_table (
                .index(phase), .k(k_now[j])
            );
        end
    endgenerate

    // ------------------------------------------------------------------
    // Stages. st*[j]: state after the last round run; hist*[j]: message words
    // consumed, newest in the top word.
    // ------------------------------------------------------------------
    wire [255:0] st1   [0:STAGES-1];
    wire [511:0] hist1 [0:STAGES-1];
    wire [255:0] st2   [0:STAGES2-1];
    wire [511:0] hist2 [0:STAGES2-1];

    generate
        for (j = 0; j < STAGES + STAGES2; j = j + 1) begin : stage
            localparam integer HASH = (j < STAGES) ? 1 : 2;
            localparam integer J = (j < STAGES) ? j : j - STAGES;   // stage within its hash
            localparam integer BASE = J * FOLD;                     // its first round
            localparam [5:0] BASE6 = BASE[5:0];

            wire [255:0] state_in;      // predecessor's state, taken on the tick
            wire [255:0] state_q;
            wire [511:0] hist_q;
            if (HASH == 1) begin : first
                assign state_in = (J == 0) ? midstate : st1[(J == 0) ? 0 : J - 1];
                assign state_q = st1[J];
                assign hist_q = hist1[J];
            end else begin : second
                assign state_in = (J == 0) ? SHA256_IV : st2[(J == 0) ? 0 : J - 1];
                assign state_q = st2[J];
                assign hist_q = hist2[J];
            end
            // With FOLD = 64 the second hash is one stage that stops after round 60:
            // it loads the IV on the last phase of the slot before (a synchronous
            // set/reset of its registers, no multiplexer) and reads its own state.
            localparam integer IV_ON_LAST_PHASE = (HASH == 2 && STAGES2 == 1) ? 1 : 0;
            wire [255:0] s = (tick && IV_ON_LAST_PHASE == 0) ? state_in : state_q;

            // The message word consumed on this clock.
            wire [31:0] w_msg, w_sched, w_now;
            if (BASE < 16) begin : message
                wire [5:0] i = BASE6 + {{(6 - PHASE_BITS){1'b0}}, phase};    // its round
                if (HASH == 1) begin : header
                    wire [31:0] n = nonce_q[(J < NONCE_STAGES) ? J : 0];
                    wire [31:0] w3 = {n[7:0], n[15:8], n[23:16], n[31:24]};
                    assign w_msg = (i == 6'd0) ? tail[95:64] :
                                   (i == 6'd1) ? tail[63:32] :
                                   (i == 6'd2) ? tail[31:0] :
                                   (i == 6'd3) ? w3 :
                                   (i == 6'd4) ? 32'h80000000 :
                                   (i == 6'd15) ? 32'd640 : 32'd0;
                end else begin : digest
                    // On the tick the first digest comes straight from the feed-forward.
                    wire [255:0] x = (J == 0 && tick) ? digest_in
                                                      : digest_q[(J < DIGEST_STAGES) ? J : 0];
                    assign w_msg = (i < 6'd8) ? x[255 - 32 * i[2:0] -: 32] :
                                   (i == 6'd8) ? 32'h80000000 :
                                   (i == 6'd15) ? 32'd256 : 32'd0;
                end
            end else begin : no_message
                assign w_msg = 32'd0;
            end

            if (BASE + FOLD > 16) begin : schedule
                wire [31:0] tap [0:3];      // W[t-2], W[t-7], W[t-15], W[t-16]
                for (k = 0; k < 4; k = k + 1) begin : taps
                    localparam integer BACK = (k == 0) ? 2 : (k == 1) ? 7 : (k == 2) ? 15 : 16;
                    localparam integer FAR = far_offset(BACK);
                    localparam integer NEAR_FROM = near_from(BACK);
                    localparam integer FAR_J = (J - FAR < 0) ? 0 : J - FAR;
                    localparam integer NEAR_J = (J - FAR + 1 < 0) ? 0 : J - FAR + 1;
                    wire [511:0] far_hist, near_hist;
                    if (HASH == 1) begin : first
                        assign far_hist = hist1[FAR_J];
                        assign near_hist = hist1[NEAR_J];
                    end else begin : second
                        assign far_hist = hist2[FAR_J];
                        assign near_hist = hist2[NEAR_J];
                    end
                    if (J == 0) begin : own         // FOLD >= 32, phases >= 16 only
                        assign tap[k] = hist_q[511 - 32 * (BACK - 1) -: 32];
                    end else if (NEAR_FROM >= FOLD) begin : fixed
                        assign tap[k] = far_hist[511 - 32 * (BACK - 1) -: 32];
                    end else begin : by_phase
                        assign tap[k] = ({{(32 - PHASE_BITS){1'b0}}, phase} < NEAR_FROM)
                                      ? far_hist[511 - 32 * (BACK - 1) -: 32]
                                      : near_hist[511 - 32 * (BACK - 1) -: 32];
                    end
                    wire unused_hist = &{1'b0, far_hist, near_hist};
                end
                sha256d_sum4 #(.VAR_MASK(4'b1111), .CONSTANT(32'd0)) schedule_sum (
                    .terms({small_sigma1(tap[0]), tap[1], small_sigma0(tap[2]), tap[3]}),
                    .sum(w_sched)
                );
            end else begin : no_schedule
                assign w_sched = 32'd0;
            end

            if (BASE + FOLD <= 16) begin : all_message
                assign w_now = w_msg;
            end else if (BASE >= 16) begin : all_schedule
                assign w_now = w_sched;
            end else begin : message_then_schedule
                assign w_now = phase[PHASE_BITS-1:4] == 0 ? w_msg : w_sched;
            end

            wire unused_words = &{1'b0, w_msg, w_sched, hist_q};

            wire [31:0] kw, hkw, a_new, e_new;
            sha256d_add32 add_kw (.a(k_now[J]), .b(w_now), .sum(kw));
            sha256d_add32 add_hkw (.a(s[31:0]), .b(kw), .sum(hkw));
            sha256d_round #(.NEED_A(1)) rnd (
                .a(s[255:224]), .b(s[223:192]), .c(s[191:160]), .d(s[159:128]),
                .e(s[127:96]), .f(s[95:64]), .g(s[63:32]), .hkw(hkw),
                .a_new(a_new), .e_new(e_new)
            );

            reg [255:0] state_r;
            reg [511:0] hist_r;
            always @(posedge clk) begin
                if (IV_ON_LAST_PHASE != 0 && last_phase)
                    state_r <= SHA256_IV;
                else
                    state_r <= {a_new, s[255:160], e_new, s[127:32]};
                hist_r  <= {w_now, hist_r[511:32]};
            end
            if (HASH == 1) begin : first_regs
                assign st1[J] = state_r;
                assign hist1[J] = hist_r;
            end else begin : second_regs
                assign st2[J] = state_r;
                assign hist2[J] = hist_r;
            end
        end
    endgenerate

    // ------------------------------------------------------------------
    // Feed-forward: first digest = midstate + state after round 63.
    // ------------------------------------------------------------------
    generate
        for (k = 0; k < 8; k = k + 1) begin : feed_forward
            sha256d_add32 add_x (.a(midstate[255 - 32 * k -: 32]),
                                 .b(st1[STAGES-1][255 - 32 * k -: 32]),
                                 .sum(digest_in[255 - 32 * k -: 32]));
        end
    endgenerate
    assign first_digest = digest_in;

    // ------------------------------------------------------------------
    // H7.
    // ------------------------------------------------------------------
    generate
        if (FOLD <= 4) begin : round60_on_tick
            // Round 60 as a stage STAGES2 would start it, on phase 0, e only,
            // with IV7 folded into K60.
            localparam integer J60 = STAGES2;
            wire [255:0] s = st2[STAGES2-1];
            wire [511:0] h2  = hist2[J60 - far_offset(2)];
            wire [511:0] h7b = hist2[J60 - far_offset(7)];
            wire [511:0] h15 = hist2[J60 - far_offset(15)];
            wire [511:0] h16 = hist2[J60 - far_offset(16)];
            wire [31:0] w60, kw, hkw, unused_a;
            sha256d_sum4 #(.VAR_MASK(4'b1111), .CONSTANT(32'd0)) schedule_sum (
                .terms({small_sigma1(h2[479:448]), h7b[319:288], small_sigma0(h15[63:32]),
                        h16[31:0]}),
                .sum(w60)
            );
            sha256d_add32 add_kw (.a(w60), .b(sha256_k(6'd60) + sha256_iv(7)), .sum(kw));
            sha256d_add32 add_hkw (.a(s[31:0]), .b(kw), .sum(hkw));
            sha256d_round #(.NEED_A(0)) rnd (
                .a(s[255:224]), .b(s[223:192]), .c(s[191:160]), .d(s[159:128]),
                .e(s[127:96]), .f(s[95:64]), .g(s[63:32]), .hkw(hkw),
                .a_new(unused_a), .e_new(h7)
            );
            wire unused = &{1'b0, unused_a, h2, h7b, h15, h16};
        end else begin : e60_from_last_stage
            sha256d_add32 add_iv7 (.a(st2[STAGES2-1][127:96]), .b(SHA256_IV[31:0]), .sum(h7));
        end
    endgenerate

    wire unused_state = &{1'b0, st2[STAGES2-1], last_phase};

endmodule

`default_nettype wire
