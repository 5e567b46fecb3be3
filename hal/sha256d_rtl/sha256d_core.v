// sha256d_core.v - rigd SHA-256d nonce search core: issue, datapath, compare,
// replay, result FIFO and counters.
//
// Hashes Bitcoin-style 80-byte headers: the host gives the job (midstate,
// header tail or its precomputation, nonce range, target, tag, fpga/README.md)
// and the core walks the inclusive nonce range, queueing {tag, nonce} for every
// nonce whose H7 passes the target word: byteswap(H7) <= target. The host
// re-checks every reported nonce against the full target with hashlib.
//
// Datapath: FOLD = 1 is sha256d_unrolled (one nonce per clock); FOLD = 2..64 is
// sha256d_folded (one nonce every FOLD clocks). Either gives H7 of a nonce a
// fixed LATENCY clocks after it was issued.
//
// Results are exact with any FIFO depth, and a small FIFO does not slow the
// search: nonces are issued while the FIFO has room, without reserving a slot
// for every nonce in flight (almost none of them match). When a matching nonce
// finds the FIFO full it is not lost: the core replays, i.e. drops what is in
// flight and issues again from that nonce once the host has popped an entry.
// Results stay in nonce order and none is reported twice.
//
// Job inputs must not change while busy (sha256d_top refuses such writes).
//
// Verilog-2005.
`default_nettype none

module sha256d_core #(
    parameter integer FOLD = 1,             // 1, 2, 4, 8, 16, 32 or 64 rounds per stage
    parameter integer FIFO_DEPTH_LOG2 = 4,  // result FIFO holds 2**FIFO_DEPTH_LOG2 entries
    parameter integer TAG_BITS = 8,         // job tag width (1..24)
    parameter integer DEBUG_DIGEST = 0      // 1: drive dbg_* (tests)
) (
    input  wire                       clk,
    input  wire                       rst,          // synchronous, active high

    // The job, read while the core is busy.
    input  wire [255:0]               midstate,     // {H0, ..., H7} after header bytes 0..63
    input  wire [95:0]                tail,         // header bytes 64..75 (FOLD >= 2)
    input  wire [511:0]               pre,          // host precomputation (FOLD = 1)
    input  wire [31:0]                nonce_first,
    input  wire [31:0]                nonce_last,   // inclusive
    input  wire [31:0]                target,       // match when byteswap(H7) <= target
    input  wire [TAG_BITS-1:0]        tag,

    input  wire                       start,        // begin the job (drops in-flight work)
    input  wire                       flush,        // drop in-flight work and the rest of the range
    input  wire                       pop,          // drop the FIFO head
    input  wire                       fifo_clear,   // drop every FIFO entry

    output wire                       busy,         // nonces left to issue or in flight
    output wire                       done,         // the whole range of the last job was hashed
    output reg                        range_error,  // last start refused: nonce_last < nonce_first
    output wire                       throttled,    // issue paused: FIFO full
    output wire                       result_valid, // FIFO not empty
    output wire [TAG_BITS-1:0]        result_tag,
    output wire [31:0]                result_nonce,
    output wire [FIFO_DEPTH_LOG2:0]   result_count,
    output wire                       fifo_full,
    output reg  [32:0]                nonces_done,  // nonces hashed and checked in this job
    output wire [31:0]                nonce_next,   // next nonce to issue
    output reg  [15:0]                replays,      // replays in this job (modulo 2^16)
    output wire [7:0]                 latency,      // LATENCY: clocks from issue to compare

    output wire                       dbg_valid,    // pulses once per checked nonce (DEBUG_DIGEST=1)
    output wire [31:0]                dbg_nonce,
    output wire [31:0]                dbg_h7,       // H7 of the second hash
    output wire                       dbg_first_valid,   // a nonce entered the second hash
    output wire [31:0]                dbg_first_nonce,
    output wire [255:0]               dbg_first_digest   // its first digest (hashlib's sha256)
);

    localparam integer PHASE_BITS = (FOLD > 1) ? $clog2(FOLD) : 1;
    localparam integer STAGES = 64 / FOLD;
    // Pipeline positions a nonce passes (one per tick), the phase of its last
    // position on which H7 is compared, the clocks from issue to compare, and
    // the position from which it enters the second hash (see the datapaths).
    localparam integer DEPTH = (FOLD == 1) ? 121 : (FOLD <= 4) ? STAGES + 60 / FOLD : 2 * STAGES;
    localparam integer RETIRE_PHASE = (FOLD <= 4) ? 0 : FOLD - 3;
    localparam integer LATENCY = (FOLD == 1) ? 121 : (FOLD <= 4) ? 124 : 125;
    localparam integer FIRST_POSITION = (FOLD == 1) ? 60 : STAGES - 1;
    localparam [PHASE_BITS-1:0] RETIRE_AT = RETIRE_PHASE[PHASE_BITS-1:0];

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
    // Phase: position inside the FOLD-clock slot; nonces enter on a tick.
    // ------------------------------------------------------------------
    wire bad_range    = nonce_last < nonce_first;
    wire accept_start = start & ~bad_range;
    wire kill         = accept_start | flush;    // drop everything in flight
    wire replay;

    reg [PHASE_BITS-1:0] phase;
    wire tick = (FOLD == 1) || (phase == {PHASE_BITS{1'b0}});

    always @(posedge clk) begin
        if (rst || accept_start || replay || FOLD == 1)
            phase <= {PHASE_BITS{1'b0}};
        else
            phase <= phase + 1'b1;
    end

    // ------------------------------------------------------------------
    // Issue, retire, replay.
    // ------------------------------------------------------------------
    reg  [31:0]        next_nonce;
    reg                running;
    reg                job_live;
    reg  [7:0]         in_flight;            // at most DEPTH <= 124
    reg  [DEPTH-1:0]   valid_q;              // valid_q[p]: position p holds a live nonce
    wire [31:0]        h7;
    wire [FIFO_DEPTH_LOG2:0] fifo_count;

    wire issue       = tick & running & ~fifo_full & ~kill;
    wire retire_slot = (phase == RETIRE_AT) & valid_q[DEPTH-1] & ~kill;
    wire is_match    = {h7[7:0], h7[15:8], h7[23:16], h7[31:24]} <= target;
    assign replay    = retire_slot & is_match & fifo_full;
    wire retire      = retire_slot & ~replay;     // checked: counted, queued if it matches
    // The oldest nonce in flight: nonces are issued in order without gaps.
    wire [31:0] retire_nonce = next_nonce - {24'd0, in_flight};

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
        end else if (replay) begin
            running     <= 1'b1;
            next_nonce  <= retire_nonce;
        end else if (issue) begin
            next_nonce  <= next_nonce + 32'd1;
            if (next_nonce == nonce_last)
                running <= 1'b0;
        end
    end

    always @(posedge clk) begin
        if (rst || kill || replay)
            in_flight <= 8'd0;
        else
            in_flight <= in_flight + {7'd0, issue} - {7'd0, retire};
    end

    always @(posedge clk) begin
        if (rst || kill || replay)
            valid_q <= {DEPTH{1'b0}};
        else if (tick)
            valid_q <= {valid_q[DEPTH-2:0], issue};
    end

    // Counters of the current job.
    always @(posedge clk) begin
        if (rst || accept_start) begin
            nonces_done <= 33'd0;
            replays     <= 16'd0;
        end else begin
            if (retire)
                nonces_done <= nonces_done + 33'd1;
            if (replay)
                replays <= replays + 16'd1;
        end
    end

    // ------------------------------------------------------------------
    // Datapath.
    // ------------------------------------------------------------------
    wire [255:0] first_digest;
    generate
        if (FOLD == 1) begin : unrolled
            sha256d_unrolled datapath (
                .clk(clk), .midstate(midstate), .pre(pre), .nonce(next_nonce),
                .h7(h7), .first_digest(first_digest)
            );
            wire unused_job = &{1'b0, tail, phase};
        end else begin : folded
            sha256d_folded #(.FOLD(FOLD)) datapath (
                .clk(clk), .phase(phase), .midstate(midstate), .tail(tail), .nonce(next_nonce),
                .h7(h7), .first_digest(first_digest)
            );
            wire unused_job = &{1'b0, pre};
        end
    endgenerate

    // ------------------------------------------------------------------
    // Results.
    // ------------------------------------------------------------------
    sha256d_fifo #(
        .WIDTH(TAG_BITS + 32),
        .DEPTH_LOG2(FIFO_DEPTH_LOG2)
    ) results (
        .clk(clk),
        .rst(rst),
        .clear(fifo_clear),
        .push(retire & is_match),
        .push_data({tag, retire_nonce}),
        .pop(pop),
        .head({result_tag, result_nonce}),
        .count(fifo_count),
        .full(fifo_full)
    );

    assign result_count = fifo_count;
    assign result_valid = (fifo_count != {(FIFO_DEPTH_LOG2 + 1){1'b0}});
    assign busy         = running | (in_flight != 8'd0);
    assign done         = job_live & ~busy;
    assign throttled    = running & fifo_full;
    assign nonce_next   = next_nonce;
    assign latency      = LATENCY[7:0];

    // ------------------------------------------------------------------
    // Observation ports for tests: every compared H7 (one clock after the
    // compare) and every first digest (one clock after it enters hash 2).
    // ------------------------------------------------------------------
    generate
        if (DEBUG_DIGEST != 0) begin : debug_port
            reg  [31:0]  nonce_q [0:DEPTH-1];   // the nonce in each position
            reg          dbg_valid_q, dbg_first_valid_q;
            reg  [31:0]  dbg_nonce_q, dbg_h7_q, dbg_first_nonce_q;
            reg  [255:0] dbg_first_digest_q;
            integer p;
            always @(posedge clk) begin
                if (tick) begin
                    nonce_q[0] <= next_nonce;
                    for (p = 1; p < DEPTH; p = p + 1)
                        nonce_q[p] <= nonce_q[p-1];
                end
                dbg_valid_q <= ~rst & retire;
                if (retire) begin
                    dbg_nonce_q <= retire_nonce;
                    dbg_h7_q    <= h7;
                end
                dbg_first_valid_q <= ~rst & ~kill & ~replay & tick & valid_q[FIRST_POSITION];
                if (tick) begin
                    dbg_first_nonce_q  <= nonce_q[FIRST_POSITION];
                    dbg_first_digest_q <= first_digest;
                end
            end
            assign dbg_valid        = dbg_valid_q;
            assign dbg_nonce        = dbg_nonce_q;
            assign dbg_h7           = dbg_h7_q;
            assign dbg_first_valid  = dbg_first_valid_q;
            assign dbg_first_nonce  = dbg_first_nonce_q;
            assign dbg_first_digest = dbg_first_digest_q;
        end else begin : no_debug_port
            wire unused_digest = &{1'b0, first_digest};
            assign dbg_valid        = 1'b0;
            assign dbg_nonce        = 32'd0;
            assign dbg_h7           = 32'd0;
            assign dbg_first_valid  = 1'b0;
            assign dbg_first_nonce  = 32'd0;
            assign dbg_first_digest = 256'd0;
        end
    endgenerate

endmodule

`default_nettype wire
