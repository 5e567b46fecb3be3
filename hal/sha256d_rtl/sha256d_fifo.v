// sha256d_fifo.v - small synchronous result FIFO with a first-word-fall-through
// head: `head` shows the oldest entry whenever `count != 0`.
//
// The core never pushes into a full FIFO: a match that finds it full is not
// pushed but replayed (sha256d_core.v). A push while full would be refused
// here rather than overwrite an entry.
//
// Verilog-2005.
`default_nettype none

module sha256d_fifo #(
    parameter integer WIDTH = 40,
    parameter integer DEPTH_LOG2 = 4
) (
    input  wire                  clk,
    input  wire                  rst,       // synchronous, active high
    input  wire                  clear,     // drop every entry
    input  wire                  push,
    input  wire [WIDTH-1:0]      push_data,
    input  wire                  pop,       // ignored while empty
    output wire [WIDTH-1:0]      head,
    output reg  [DEPTH_LOG2:0]   count,
    output wire                  full
);

    localparam integer DEPTH = 1 << DEPTH_LOG2;

    reg [WIDTH-1:0]      mem [0:DEPTH-1];
    reg [DEPTH_LOG2-1:0] rd_ptr;
    reg [DEPTH_LOG2-1:0] wr_ptr;

    assign full    = count[DEPTH_LOG2];   // count never exceeds DEPTH
    wire empty     = (count == {(DEPTH_LOG2 + 1){1'b0}});
    wire do_push   = push & ~full;
    wire do_pop    = pop & ~empty;

    assign head = mem[rd_ptr];

    always @(posedge clk) begin
        if (do_push && !clear)
            mem[wr_ptr] <= push_data;
    end

    always @(posedge clk) begin
        if (rst || clear) begin
            rd_ptr <= {DEPTH_LOG2{1'b0}};
            wr_ptr <= {DEPTH_LOG2{1'b0}};
            count  <= {(DEPTH_LOG2 + 1){1'b0}};
        end else begin
            if (do_push) wr_ptr <= wr_ptr + 1'b1;
            if (do_pop)  rd_ptr <= rd_ptr + 1'b1;
            case ({do_push, do_pop})
                2'b10:   count <= count + 1'b1;
                2'b01:   count <= count - 1'b1;
                default: count <= count;
            endcase
        end
    end

endmodule

`default_nettype wire
