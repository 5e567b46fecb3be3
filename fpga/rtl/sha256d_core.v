// sha256d_core.v - rigd SHA-256d nonce search core.
//
// Hashes Bitcoin-style 80-byte headers: the host gives the midstate (SHA-256
// state after the first 64 header bytes) and the 12 bytes before the nonce;
// the core walks an inclusive nonce range and queues {tag, nonce} for every
// nonce whose double hash passes the target-word compare.
//
// Pipeline: 2 * 64/FOLD round stages (first hash, then second hash), each
// doing FOLD rounds at one round per clock. All stages hand over together on
// "tick" clocks (every FOLD clocks), so one nonce enters every FOLD clocks and
// leaves exactly LATENCY = 128 clocks after it entered, whatever FOLD is.
//
// Match rule: the final digest is H0..H7 (bytes big-endian per word). Read as
// the 256-bit little-endian number Bitcoin compares with the target, its top
// 32 bits are byteswap(H7). A nonce matches when byteswap(H7) <= target.
// target = 0 is the usual miner filter (H7 == 0, "difficulty-1-ish"); the host
// re-checks the full 256-bit target in software.
//
// Back-pressure: a nonce is issued only while fifo count + nonces in flight is
// below the FIFO depth, so every nonce in flight has a reserved FIFO slot. When
// the host stops reading, issue pauses (`throttled`), nothing is lost, and the
// search resumes when entries are popped.
//
// Verilog-2005.
`default_nettype none

module sha256d_core #(
    parameter integer FOLD = 1,             // 1, 2, 4, 8, 16, 32 or 64 rounds per stage
    parameter integer FIFO_DEPTH_LOG2 = 8,  // result FIFO holds 2**FIFO_DEPTH_LOG2 entries
    parameter integer TAG_BITS = 8,         // job tag width (1..24)
    parameter integer DEBUG_DIGEST = 0      // 1: drive dbg_* with every final digest
) (
    input  wire                       clk,
    input  wire                       rst,          // synchronous, active high

    // Job inputs, copied into the active job on an accepted `start`.
    input  wire [255:0]               midstate,     // {H0, ..., H7} after header bytes 0..63
    input  wire [95:0]                tail,         // {W0, W1, W2}: header bytes 64..75, big-endian words
    input  wire [31:0]                nonce_first,  // first nonce (header value, little-endian in the header)
    input  wire [31:0]                nonce_last,   // last nonce, inclusive
    input  wire [31:0]                target,       // match when byteswap(H7) <= target
    input  wire [TAG_BITS-1:0]        tag,

    input  wire                       start,        // begin the job (drops in-flight work of the old one)
    input  wire                       flush,        // drop in-flight work and the rest of the range
    input  wire                       pop,          // drop the FIFO head
    input  wire                       fifo_clear,   // drop every FIFO entry

    output wire                       busy,         // nonces left to issue or in flight
    output wire                       done,         // the whole range of the last job was hashed
    output reg                        range_error,  // last start refused: nonce_last < nonce_first
    output wire                       throttled,    // issue paused waiting for FIFO room
    output wire                       result_valid, // FIFO not empty
    output wire [TAG_BITS-1:0]        result_tag,
    output wire [31:0]                result_nonce,
    output wire [FIFO_DEPTH_LOG2:0]   result_count,
    output wire                       fifo_overflow, // sticky; never set unless the design is wrong
    output reg  [32:0]                nonces_done,  // nonces hashed and checked in this job
    output wire [31:0]                nonce_next,   // next nonce to issue

    output wire                       dbg_valid,    // pulses once per hashed nonce (DEBUG_DIGEST=1)
    output wire [31:0]                dbg_nonce,
    output wire [255:0]               dbg_digest    // {H0, ..., H7} of the second hash
);

    localparam integer STAGES     = 64 / FOLD;          // stages per hash
    localparam integer DEPTH      = 2 * STAGES;         // stages in the pipeline
    localparam integer PHASE_BITS = (FOLD > 1) ? $clog2(FOLD) : 1;
    localparam integer FIFO_DEPTH = 1 << FIFO_DEPTH_LOG2;

    localparam [255:0] SHA256_IV = {
        32'h6a09e667, 32'hbb67ae85, 32'h3c6ef372, 32'ha54ff53a,
        32'h510e527f, 32'h9b05688c, 32'h1f83d9ab, 32'h5be0cd19
    };

    generate
        if (FOLD != 1 && FOLD != 2 && FOLD != 4 && FOLD != 8 &&
            FOLD != 16 && FOLD != 32 && FOLD != 64) begin : bad_fold
            // Elaboration stops here: no module has this name.
            FOLD_must_be_1_2_4_8_16_32_or_64 refuse_to_build ();
        end
        if (TAG_BITS < 1 || TAG_BITS > 24) begin : bad_tag_bits
            TAG_BITS_must_be_1_to_24 refuse_to_build ();
        end
    endgenerate

    // ------------------------------------------------------------------
    // Phase: position inside the FOLD-clock slot; stages hand over on tick.
    // ------------------------------------------------------------------
    wire bad_range    = nonce_last < nonce_first;
    wire accept_start = start & ~bad_range;
    wire kill         = accept_start | flush;    // drop everything in flight

    reg [PHASE_BITS-1:0] phase;
    wire tick = (phase == {PHASE_BITS{1'b0}});

    always @(posedge clk) begin
        if (rst || accept_start || FOLD == 1)
            phase <= {PHASE_BITS{1'b0}};
        else
            phase <= phase + 1'b1;
    end

    // ------------------------------------------------------------------
    // Active job and issue.
    // ------------------------------------------------------------------
    reg [255:0]          job_midstate;
    reg [95:0]           job_tail;
    reg [31:0]           job_last;
    reg [31:0]           job_target;
    reg [TAG_BITS-1:0]   job_tag;
    reg [31:0]           next_nonce;
    reg                  running;
    reg                  job_live;
    reg [7:0]            in_flight;             // at most DEPTH <= 128

    wire [FIFO_DEPTH_LOG2:0] fifo_count;
    wire [31:0] reserved  = {{(31 - FIFO_DEPTH_LOG2){1'b0}}, fifo_count} + {24'd0, in_flight};
    wire        credit_ok = reserved < FIFO_DEPTH;
    wire        issue     = tick & running & credit_ok & ~kill;

    reg  [DEPTH-1:0]     valid_q;               // valid_q[j]: stage j holds a live nonce
    reg  [31:0]          nonce_q [0:DEPTH-1];   // nonce_q[j]: its nonce
    wire                 retire = tick & valid_q[DEPTH-1] & ~kill;
    wire                 is_match;

    always @(posedge clk) begin
        if (accept_start) begin
            job_midstate <= midstate;
            job_tail     <= tail;
            job_last     <= nonce_last;
            job_target   <= target;
            job_tag      <= tag;
        end
    end

    always @(posedge clk) begin
        if (rst)
            range_error <= 1'b0;
        else if (start)
            range_error <= bad_range;            // a refused start leaves the running job alone
    end

    always @(posedge clk) begin
        if (rst) begin
            running     <= 1'b0;
            job_live    <= 1'b0;
            next_nonce  <= 32'd0;
        end else if (accept_start) begin
            running     <= 1'b1;
            job_live    <= 1'b1;
            next_nonce  <= nonce_first;
        end else if (flush) begin
            running     <= 1'b0;
            job_live    <= 1'b0;
        end else if (issue) begin
            next_nonce  <= next_nonce + 32'd1;
            if (next_nonce == job_last)
                running <= 1'b0;
        end
    end

    always @(posedge clk) begin
        if (rst || kill)
            in_flight <= 8'd0;
        else
            in_flight <= in_flight + {7'd0, issue} - {7'd0, retire};
    end

    always @(posedge clk) begin
        if (rst || accept_start)
            nonces_done <= 33'd0;
        else if (retire)
            nonces_done <= nonces_done + 33'd1;
    end

    always @(posedge clk) begin
        if (rst || kill)
            valid_q <= {DEPTH{1'b0}};
        else if (tick)
            valid_q <= {valid_q[DEPTH-2:0], issue};
    end

    genvar i;
    always @(posedge clk) begin
        if (tick)
            nonce_q[0] <= next_nonce;
    end

    generate
        for (i = 1; i < DEPTH; i = i + 1) begin : nonce_pipe
            always @(posedge clk) begin
                if (tick)
                    nonce_q[i] <= nonce_q[i-1];
            end
        end
    endgenerate

    // ------------------------------------------------------------------
    // Round stages. Stage j covers rounds (j mod STAGES)*FOLD .. +FOLD-1 of
    // the first hash (j < STAGES) or of the second hash (j >= STAGES).
    // ------------------------------------------------------------------
    wire [255:0] stage_state  [0:DEPTH-1];
    wire [511:0] stage_window [0:DEPTH-1];

    // Second block of the header: W0..W2, the nonce as a big-endian word,
    // then SHA-256 padding for an 80-byte message (length 640 bits).
    wire [31:0]  nonce_word   = {next_nonce[7:0], next_nonce[15:8], next_nonce[23:16], next_nonce[31:24]};
    wire [511:0] first_window = {job_tail, nonce_word, 32'h80000000, 320'd0, 32'h00000280};

    // First digest = midstate + state after 64 rounds, word by word.
    wire [255:0] first_rounds = stage_state[STAGES-1];
    wire [255:0] first_digest;
    // Final digest = IV + state after the second 64 rounds.
    wire [255:0] final_rounds = stage_state[DEPTH-1];
    wire [255:0] final_digest;

    generate
        for (i = 0; i < 8; i = i + 1) begin : feed_forward
            assign first_digest[32*i +: 32] = job_midstate[32*i +: 32] + first_rounds[32*i +: 32];
            assign final_digest[32*i +: 32] = SHA256_IV[32*i +: 32] + final_rounds[32*i +: 32];
        end
    endgenerate

    // The last stage of each hash hands on its state only: its window is dead.
    wire unused_last_windows = &{1'b0, stage_window[STAGES-1], stage_window[DEPTH-1]};

    // Second hash: one block of the 32-byte first digest, padded (256 bits).
    wire [511:0] second_window = {first_digest, 32'h80000000, 192'd0, 32'h00000100};

    generate
        for (i = 0; i < DEPTH; i = i + 1) begin : stage
            wire [255:0] state_in;
            wire [511:0] window_in;
            if (i == 0) begin : from_job
                assign state_in  = job_midstate;
                assign window_in = first_window;
            end else if (i == STAGES) begin : from_first_hash
                assign state_in  = SHA256_IV;
                assign window_in = second_window;
            end else begin : from_previous
                assign state_in  = stage_state[i-1];
                assign window_in = stage_window[i-1];
            end
            sha256d_stage #(
                .BASE((i % STAGES) * FOLD),
                .PHASE_BITS(PHASE_BITS)
            ) rounds (
                .clk(clk),
                .load(tick),
                .phase(phase),
                .state_in(state_in),
                .window_in(window_in),
                .state_q(stage_state[i]),
                .window_q(stage_window[i])
            );
        end
    endgenerate

    // ------------------------------------------------------------------
    // Compare and queue.
    // ------------------------------------------------------------------
    wire [31:0] h7    = final_digest[31:0];
    wire [31:0] top32 = {h7[7:0], h7[15:8], h7[23:16], h7[31:24]};
    assign is_match   = top32 <= job_target;

    wire [31:0] retire_nonce = nonce_q[DEPTH-1];

    sha256d_fifo #(
        .WIDTH(TAG_BITS + 32),
        .DEPTH_LOG2(FIFO_DEPTH_LOG2)
    ) results (
        .clk(clk),
        .rst(rst),
        .clear(fifo_clear),
        .push(retire & is_match),
        .push_data({job_tag, retire_nonce}),
        .pop(pop),
        .head({result_tag, result_nonce}),
        .count(fifo_count),
        .overflow(fifo_overflow)
    );

    assign result_count = fifo_count;
    assign result_valid = (fifo_count != {(FIFO_DEPTH_LOG2 + 1){1'b0}});
    assign busy         = running | (in_flight != 8'd0);
    assign done         = job_live & ~busy;
    assign throttled    = running & ~credit_ok;
    assign nonce_next   = next_nonce;

    // ------------------------------------------------------------------
    // Observation port for tests: every final digest, one clock after retire.
    // ------------------------------------------------------------------
    generate
        if (DEBUG_DIGEST != 0) begin : debug_port
            reg         dbg_valid_q;
            reg [31:0]  dbg_nonce_q;
            reg [255:0] dbg_digest_q;
            always @(posedge clk) begin
                dbg_valid_q <= ~rst & retire;
                if (retire) begin
                    dbg_nonce_q  <= retire_nonce;
                    dbg_digest_q <= final_digest;
                end
            end
            assign dbg_valid  = dbg_valid_q;
            assign dbg_nonce  = dbg_nonce_q;
            assign dbg_digest = dbg_digest_q;
        end else begin : no_debug_port
            wire unused_digest = &{1'b0, final_digest[255:32]};
            assign dbg_valid  = 1'b0;
            assign dbg_nonce  = 32'd0;
            assign dbg_digest = 256'd0;
        end
    endgenerate

endmodule

`default_nettype wire
