// sha256d_top.v - rigd SHA-256d search core behind a simple CSR bus.
//
// Bus: one 32-bit register per word address (byte address, bits [1:0]
// ignored). A write is taken on the clock where csr_wen is high. A read is
// requested with csr_ren; csr_rdata is valid on the next clock, flagged by
// csr_rvalid. Unknown addresses read 0 and ignore writes. The register map is
// in fpga/README.md and mirrored by the constants below and by
// hal/sha256d_core.py.
//
// Job registers are write-only and hold the job the core runs: they take
// writes only while the core is not busy (a write while busy is ignored and
// sets the sticky STATUS.JOB_WRITE_IGNORED, cleared by CTRL.CLEAR_FLAG), so a
// running job never sees them change.
//
// Verilog-2005.
`default_nettype none

module sha256d_top #(
    parameter integer FOLD = 1,
    parameter integer FIFO_DEPTH_LOG2 = 4,  // 1..12
    parameter integer TAG_BITS = 8,         // 1..24
    parameter integer DEBUG_DIGEST = 0
) (
    input  wire         clk,
    input  wire         rst,
    input  wire [7:0]   csr_addr,
    input  wire [31:0]  csr_wdata,
    input  wire         csr_wen,
    input  wire         csr_ren,
    output reg  [31:0]  csr_rdata,
    output reg          csr_rvalid,
    output wire         irq_result,   // result FIFO not empty
    output wire         irq_done,     // job range finished
    output wire         dbg_valid,
    output wire [31:0]  dbg_nonce,
    output wire [31:0]  dbg_h7,
    output wire         dbg_first_valid,
    output wire [31:0]  dbg_first_nonce,
    output wire [255:0] dbg_first_digest
);

    localparam [31:0] CORE_ID = 32'h53324432;   // "S2D2"

    // Word addresses (byte address >> 2).
    localparam [5:0] A_ID           = 6'h00;
    localparam [5:0] A_CONFIG       = 6'h01;
    localparam [5:0] A_LATENCY      = 6'h02;
    localparam [5:0] A_CTRL         = 6'h03;
    localparam [5:0] A_STATUS       = 6'h04;
    localparam [5:0] A_JOB_TAG      = 6'h05;
    localparam [5:0] A_TARGET       = 6'h06;
    localparam [5:0] A_NONCE_FIRST  = 6'h07;
    localparam [5:0] A_NONCE_LAST   = 6'h08;
    localparam [5:0] A_MIDSTATE0    = 6'h09;   // .. 6'h10 (H0 .. H7)
    localparam [5:0] A_TAIL0        = 6'h11;   // .. 6'h13 (W0 .. W2)
    localparam [5:0] A_DONE_LO      = 6'h14;
    localparam [5:0] A_DONE_HI      = 6'h15;
    localparam [5:0] A_NONCE_NEXT   = 6'h16;
    localparam [5:0] A_RESULT_TAG   = 6'h17;
    localparam [5:0] A_RESULT_NONCE = 6'h18;
    localparam [5:0] A_REPLAYS      = 6'h19;
    localparam [5:0] A_PRE0         = 6'h20;   // .. 6'h2F (16 precomputed words)

    generate
        if (FIFO_DEPTH_LOG2 < 1 || FIFO_DEPTH_LOG2 > 12) begin : bad_fifo_depth
            FIFO_DEPTH_LOG2_must_be_1_to_12 refuse_to_build ();
        end
    endgenerate

    wire [5:0] word  = csr_addr[7:2];
    wire unused_addr = &{1'b0, csr_addr[1:0]};

    wire busy;
    wire ctrl_write = csr_wen && word == A_CTRL;
    wire start      = ctrl_write & csr_wdata[0];
    wire flush      = ctrl_write & csr_wdata[1];
    wire pop        = ctrl_write & csr_wdata[2];
    wire fifo_clear = ctrl_write & csr_wdata[3];
    wire clear_flag = ctrl_write & csr_wdata[4];

    // Job registers: written only while idle.
    wire job_word   = (word >= A_JOB_TAG && word <= A_TAIL0 + 6'd2) ||
                      (word >= A_PRE0 && word <= A_PRE0 + 6'd15);
    wire job_write  = csr_wen & ~busy;

    reg [TAG_BITS-1:0] job_tag;
    reg [31:0]         target;
    reg [31:0]         nonce_first;
    reg [31:0]         nonce_last;
    reg                write_ignored;

    // The header words: MIDSTATE0..7 and TAIL0..2 (contiguous), then PRE0..15.
    localparam integer HEADER_WORDS = 8 + 3 + 16;
    reg [32*HEADER_WORDS-1:0] header_words;       // word 0 in the top bits
    wire [255:0] midstate = header_words[32*HEADER_WORDS-1 -: 256];
    wire [95:0]  tail     = header_words[32*HEADER_WORDS-257 -: 96];
    wire [511:0] pre      = header_words[511:0];

    always @(posedge clk) begin
        if (rst) begin
            job_tag     <= {TAG_BITS{1'b0}};
            target      <= 32'd0;
            nonce_first <= 32'd0;
            nonce_last  <= 32'd0;
        end else if (job_write) begin
            case (word)
                A_JOB_TAG:     job_tag     <= csr_wdata[TAG_BITS-1:0];
                A_TARGET:      target      <= csr_wdata;
                A_NONCE_FIRST: nonce_first <= csr_wdata;
                A_NONCE_LAST:  nonce_last  <= csr_wdata;
                default: ;
            endcase
        end
    end

    genvar i;
    generate
        for (i = 0; i < HEADER_WORDS; i = i + 1) begin : header_word
            localparam [5:0] ADDRESS = (i < 11) ? A_MIDSTATE0 + i : A_PRE0 + (i - 11);
            always @(posedge clk)
                if (rst)
                    header_words[32*(HEADER_WORDS-i)-1 -: 32] <= 32'd0;
                else if (job_write && word == ADDRESS)
                    header_words[32*(HEADER_WORDS-i)-1 -: 32] <= csr_wdata;
        end
    endgenerate

    wire                       done;
    wire                       range_error;
    wire                       throttled;
    wire                       result_valid;
    wire [TAG_BITS-1:0]        result_tag;
    wire [31:0]                result_nonce;
    wire [FIFO_DEPTH_LOG2:0]   result_count;
    wire                       fifo_full;
    wire [32:0]                nonces_done;
    wire [31:0]                nonce_next;
    wire [15:0]                replays;
    wire [7:0]                 latency;

    always @(posedge clk) begin
        if (rst || clear_flag)
            write_ignored <= 1'b0;
        else if (csr_wen && busy && job_word)
            write_ignored <= 1'b1;
    end

    sha256d_core #(
        .FOLD(FOLD),
        .FIFO_DEPTH_LOG2(FIFO_DEPTH_LOG2),
        .TAG_BITS(TAG_BITS),
        .DEBUG_DIGEST(DEBUG_DIGEST)
    ) core (
        .clk(clk),
        .rst(rst),
        .midstate(midstate),
        .tail(tail),
        .pre(pre),
        .nonce_first(nonce_first),
        .nonce_last(nonce_last),
        .target(target),
        .tag(job_tag),
        .start(start),
        .flush(flush),
        .pop(pop),
        .fifo_clear(fifo_clear),
        .busy(busy),
        .done(done),
        .range_error(range_error),
        .throttled(throttled),
        .result_valid(result_valid),
        .result_tag(result_tag),
        .result_nonce(result_nonce),
        .result_count(result_count),
        .fifo_full(fifo_full),
        .nonces_done(nonces_done),
        .nonce_next(nonce_next),
        .replays(replays),
        .latency(latency),
        .dbg_valid(dbg_valid),
        .dbg_nonce(dbg_nonce),
        .dbg_h7(dbg_h7),
        .dbg_first_valid(dbg_first_valid),
        .dbg_first_nonce(dbg_first_nonce),
        .dbg_first_digest(dbg_first_digest)
    );

    assign irq_result = result_valid;
    assign irq_done   = done;

    wire [15:0] count16   = {{(15 - FIFO_DEPTH_LOG2){1'b0}}, result_count};
    wire [31:0] status    = {count16, 9'd0, write_ignored, range_error, throttled,
                             fifo_full, result_valid, done, busy};
    wire [31:0] config_word = {7'd0, DEBUG_DIGEST != 0, TAG_BITS[7:0],
                               FIFO_DEPTH_LOG2[7:0], FOLD[7:0]};

    reg [31:0] read_value;
    always @(*) begin
        case (word)
            A_ID:           read_value = CORE_ID;
            A_CONFIG:       read_value = config_word;
            A_LATENCY:      read_value = {24'd0, latency};
            A_STATUS:       read_value = status;
            A_DONE_LO:      read_value = nonces_done[31:0];
            A_DONE_HI:      read_value = {31'd0, nonces_done[32]};
            A_NONCE_NEXT:   read_value = nonce_next;
            // The head reads as 0 while the FIFO is empty (its RAM word is stale).
            A_RESULT_TAG:   read_value = result_valid ? {1'b1, {(31 - TAG_BITS){1'b0}}, result_tag} : 32'd0;
            A_RESULT_NONCE: read_value = result_valid ? result_nonce : 32'd0;
            A_REPLAYS:      read_value = {16'd0, replays};
            default:        read_value = 32'd0;
        endcase
    end

    always @(posedge clk) begin
        if (rst) begin
            csr_rvalid <= 1'b0;
            csr_rdata  <= 32'd0;
        end else begin
            csr_rvalid <= csr_ren;
            if (csr_ren)
                csr_rdata <= read_value;
        end
    end

endmodule

`default_nettype wire
