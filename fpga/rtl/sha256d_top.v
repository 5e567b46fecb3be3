// sha256d_top.v - rigd SHA-256d search core behind a simple CSR bus.
//
// Bus: one 32-bit register per word address (byte address, bits [1:0]
// ignored). A write is taken on the clock where csr_wen is high. A read is
// requested with csr_ren; csr_rdata is valid on the next clock, flagged by
// csr_rvalid. Unknown addresses read 0 and ignore writes. The register map is
// in fpga/README.md and mirrored by the constants below.
//
// Verilog-2005.
`default_nettype none

module sha256d_top #(
    parameter integer FOLD = 1,
    parameter integer FIFO_DEPTH_LOG2 = 8,  // 1..12
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
    output wire [255:0] dbg_digest
);

    localparam [31:0] CORE_ID = 32'h53324431;   // "S2D1"
    localparam [31:0] LATENCY = 32'd128;        // clocks from issue to FIFO, every FOLD

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

    generate
        if (FIFO_DEPTH_LOG2 < 1 || FIFO_DEPTH_LOG2 > 12) begin : bad_fifo_depth
            FIFO_DEPTH_LOG2_must_be_1_to_12 refuse_to_build ();
        end
    endgenerate

    wire [5:0] word    = csr_addr[7:2];
    wire unused_addr   = &{1'b0, csr_addr[1:0]};

    // Job registers (the host's copy; the core latches them on START).
    reg [TAG_BITS-1:0] job_tag;
    reg [31:0]         target;
    reg [31:0]         nonce_first;
    reg [31:0]         nonce_last;
    reg [255:0]        midstate;
    reg [95:0]         tail;

    wire ctrl_write = csr_wen && word == A_CTRL;
    wire start      = ctrl_write & csr_wdata[0];
    wire flush      = ctrl_write & csr_wdata[1];
    wire pop        = ctrl_write & csr_wdata[2];
    wire fifo_clear = ctrl_write & csr_wdata[3];

    always @(posedge clk) begin
        if (rst) begin
            job_tag     <= {TAG_BITS{1'b0}};
            target      <= 32'd0;
            nonce_first <= 32'd0;
            nonce_last  <= 32'd0;
            midstate    <= 256'd0;
            tail        <= 96'd0;
        end else if (csr_wen) begin
            case (word)
                A_JOB_TAG:     job_tag     <= csr_wdata[TAG_BITS-1:0];
                A_TARGET:      target      <= csr_wdata;
                A_NONCE_FIRST: nonce_first <= csr_wdata;
                A_NONCE_LAST:  nonce_last  <= csr_wdata;
                A_MIDSTATE0 + 6'd0: midstate[255:224] <= csr_wdata;
                A_MIDSTATE0 + 6'd1: midstate[223:192] <= csr_wdata;
                A_MIDSTATE0 + 6'd2: midstate[191:160] <= csr_wdata;
                A_MIDSTATE0 + 6'd3: midstate[159:128] <= csr_wdata;
                A_MIDSTATE0 + 6'd4: midstate[127:96]  <= csr_wdata;
                A_MIDSTATE0 + 6'd5: midstate[95:64]   <= csr_wdata;
                A_MIDSTATE0 + 6'd6: midstate[63:32]   <= csr_wdata;
                A_MIDSTATE0 + 6'd7: midstate[31:0]    <= csr_wdata;
                A_TAIL0 + 6'd0: tail[95:64]       <= csr_wdata;
                A_TAIL0 + 6'd1: tail[63:32]       <= csr_wdata;
                A_TAIL0 + 6'd2: tail[31:0]        <= csr_wdata;
                default: ;
            endcase
        end
    end

    wire                       busy;
    wire                       done;
    wire                       range_error;
    wire                       throttled;
    wire                       result_valid;
    wire [TAG_BITS-1:0]        result_tag;
    wire [31:0]                result_nonce;
    wire [FIFO_DEPTH_LOG2:0]   result_count;
    wire                       fifo_overflow;
    wire [32:0]                nonces_done;
    wire [31:0]                nonce_next;

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
        .fifo_overflow(fifo_overflow),
        .nonces_done(nonces_done),
        .nonce_next(nonce_next),
        .dbg_valid(dbg_valid),
        .dbg_nonce(dbg_nonce),
        .dbg_digest(dbg_digest)
    );

    assign irq_result = result_valid;
    assign irq_done   = done;

    wire [15:0] count16   = {{(15 - FIFO_DEPTH_LOG2){1'b0}}, result_count};
    wire        fifo_full = result_count[FIFO_DEPTH_LOG2];
    wire [31:0] status    = {count16, 9'd0, fifo_overflow, range_error, throttled,
                             fifo_full, result_valid, done, busy};
    wire [31:0] config_word = {7'd0, DEBUG_DIGEST != 0, TAG_BITS[7:0],
                               FIFO_DEPTH_LOG2[7:0], FOLD[7:0]};

    reg [31:0] read_value;
    always @(*) begin
        case (word)
            A_ID:           read_value = CORE_ID;
            A_CONFIG:       read_value = config_word;
            A_LATENCY:      read_value = LATENCY;
            A_STATUS:       read_value = status;
            A_JOB_TAG:      read_value = {{(32 - TAG_BITS){1'b0}}, job_tag};
            A_TARGET:       read_value = target;
            A_NONCE_FIRST:  read_value = nonce_first;
            A_NONCE_LAST:   read_value = nonce_last;
            A_MIDSTATE0 + 6'd0: read_value = midstate[255:224];
            A_MIDSTATE0 + 6'd1: read_value = midstate[223:192];
            A_MIDSTATE0 + 6'd2: read_value = midstate[191:160];
            A_MIDSTATE0 + 6'd3: read_value = midstate[159:128];
            A_MIDSTATE0 + 6'd4: read_value = midstate[127:96];
            A_MIDSTATE0 + 6'd5: read_value = midstate[95:64];
            A_MIDSTATE0 + 6'd6: read_value = midstate[63:32];
            A_MIDSTATE0 + 6'd7: read_value = midstate[31:0];
            A_TAIL0 + 6'd0: read_value = tail[95:64];
            A_TAIL0 + 6'd1: read_value = tail[63:32];
            A_TAIL0 + 6'd2: read_value = tail[31:0];
            A_DONE_LO:      read_value = nonces_done[31:0];
            A_DONE_HI:      read_value = {31'd0, nonces_done[32]};
            A_NONCE_NEXT:   read_value = nonce_next;
            // The head reads as 0 while the FIFO is empty (its RAM word is stale).
            A_RESULT_TAG:   read_value = result_valid ? {1'b1, {(31 - TAG_BITS){1'b0}}, result_tag} : 32'd0;
            A_RESULT_NONCE: read_value = result_valid ? result_nonce : 32'd0;
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
