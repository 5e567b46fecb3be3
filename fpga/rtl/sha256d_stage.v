// sha256d_stage.v - one SHA-256 round stage of the rigd search pipeline.
//
// A stage owns FOLD (set by the core) consecutive rounds (BASE .. BASE+FOLD-1) and runs one
// round per clock. On a clock where `load` is high it takes a fresh state and
// 16-word message window from its predecessor and runs round BASE on them;
// on the other FOLD-1 clocks it runs the next round on its own registers.
// FOLD = 1 gives a plain pipeline register with one round of logic.
//
// state  = {a, b, c, d, e, f, g, h}          (a in the top 32 bits)
// window = {W[t], W[t+1], ..., W[t+15]}      (W[t] in the top 32 bits)
// After a round the window shifts by one word and W[t+16] enters at the
// bottom, so the schedule is computed on the fly as the state moves along.
//
// Verilog-2005.
`default_nettype none

module sha256d_stage #(
    parameter integer BASE = 0,        // index of the first round (0..63)
    parameter integer PHASE_BITS = 1   // width of `phase`
) (
    input  wire                  clk,
    input  wire                  load,      // high on the clock that takes the predecessor's data
    input  wire [PHASE_BITS-1:0] phase,     // 0 when load is high, then 1 .. FOLD-1
    input  wire [255:0]          state_in,
    input  wire [511:0]          window_in,
    output reg  [255:0]          state_q,
    output reg  [511:0]          window_q
);

    function [31:0] rotr;
        input [31:0] x;
        input integer n;
        begin
            rotr = (x >> n) | (x << (32 - n));
        end
    endfunction

    function [31:0] sha256_k;
        input [5:0] t;
        begin
            case (t)
      6'd0: sha256_k = 32'h428a2f98;
      6'd1: sha256_k = 32'h71374491;
      6'd2: sha256_k = 32'hb5c0fbcf;
      6'd3: sha256_k = 32'he9b5dba5;
      6'd4: sha256_k = 32'h3956c25b;
      6'd5: sha256_k = 32'h59f111f1;
      6'd6: sha256_k = 32'h923f82a4;
      6'd7: sha256_k = 32'hab1c5ed5;
      6'd8: sha256_k = 32'hd807aa98;
      6'd9: sha256_k = 32'h12835b01;
      6'd10: sha256_k = 32'h243185be;
      6'd11: sha256_k = 32'h550c7dc3;
      6'd12: sha256_k = 32'h72be5d74;
      6'd13: sha256_k = 32'h80deb1fe;
      6'd14: sha256_k = 32'h9bdc06a7;
      6'd15: sha256_k = 32'hc19bf174;
      6'd16: sha256_k = 32'he49b69c1;
      6'd17: sha256_k = 32'hefbe4786;
      6'd18: sha256_k = 32'h0fc19dc6;
      6'd19: sha256_k = 32'h240ca1cc;
      6'd20: sha256_k = 32'h2de92c6f;
      6'd21: sha256_k = 32'h4a7484aa;
      6'd22: sha256_k = 32'h5cb0a9dc;
      6'd23: sha256_k = 32'h76f988da;
      6'd24: sha256_k = 32'h983e5152;
      6'd25: sha256_k = 32'ha831c66d;
      6'd26: sha256_k = 32'hb00327c8;
      6'd27: sha256_k = 32'hbf597fc7;
      6'd28: sha256_k = 32'hc6e00bf3;
      6'd29: sha256_k = 32'hd5a79147;
      6'd30: sha256_k = 32'h06ca6351;
      6'd31: sha256_k = 32'h14292967;
      6'd32: sha256_k = 32'h27b70a85;
      6'd33: sha256_k = 32'h2e1b2138;
      6'd34: sha256_k = 32'h4d2c6dfc;
      6'd35: sha256_k = 32'h53380d13;
      6'd36: sha256_k = 32'h650a7354;
      6'd37: sha256_k = 32'h766a0abb;
      6'd38: sha256_k = 32'h81c2c92e;
      6'd39: sha256_k = 32'h92722c85;
      6'd40: sha256_k = 32'ha2bfe8a1;
      6'd41: sha256_k = 32'ha81a664b;
      6'd42: sha256_k = 32'hc24b8b70;
      6'd43: sha256_k = 32'hc76c51a3;
      6'd44: sha256_k = 32'hd192e819;
      6'd45: sha256_k = 32'hd6990624;
      6'd46: sha256_k = 32'hf40e3585;
      6'd47: sha256_k = 32'h106aa070;
      6'd48: sha256_k = 32'h19a4c116;
      6'd49: sha256_k = 32'h1e376c08;
      6'd50: sha256_k = 32'h2748774c;
      6'd51: sha256_k = 32'h34b0bcb5;
      6'd52: sha256_k = 32'h391c0cb3;
      6'd53: sha256_k = 32'h4ed8aa4a;
      6'd54: sha256_k = 32'h5b9cca4f;
      6'd55: sha256_k = 32'h682e6ff3;
      6'd56: sha256_k = 32'h748f82ee;
      6'd57: sha256_k = 32'h78a5636f;
      6'd58: sha256_k = 32'h84c87814;
      6'd59: sha256_k = 32'h8cc70208;
      6'd60: sha256_k = 32'h90befffa;
      6'd61: sha256_k = 32'ha4506ceb;
      6'd62: sha256_k = 32'hbef9a3f7;
      6'd63: sha256_k = 32'hc67178f2;
                default: sha256_k = 32'h00000000;
            endcase
        end
    endfunction

    wire [255:0] s = load ? state_in  : state_q;
    wire [511:0] w = load ? window_in : window_q;

    wire [31:0] a = s[255:224];
    wire [31:0] b = s[223:192];
    wire [31:0] c = s[191:160];
    wire [31:0] d = s[159:128];
    wire [31:0] e = s[127:96];
    wire [31:0] f = s[95:64];
    wire [31:0] g = s[63:32];
    wire [31:0] h = s[31:0];

    wire [31:0] w0  = w[511:480];
    wire [31:0] w1  = w[479:448];
    wire [31:0] w9  = w[223:192];
    wire [31:0] w14 = w[63:32];

    // Round index: BASE on the load clock, BASE+phase after. The sum is taken
    // in 32 bits and trimmed so no width warning hides a real overflow.
    wire [31:0] round_wide = BASE + {{(32 - PHASE_BITS){1'b0}}, phase};
    wire [5:0]  round_idx  = round_wide[5:0];

    wire [31:0] big_sigma1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    wire [31:0] choose     = (e & f) ^ (~e & g);
    wire [31:0] t1         = h + big_sigma1 + choose + sha256_k(round_idx) + w0;
    wire [31:0] big_sigma0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    wire [31:0] majority   = (a & b) ^ (a & c) ^ (b & c);
    wire [31:0] t2         = big_sigma0 + majority;

    wire [31:0] small_sigma0 = rotr(w1, 7) ^ rotr(w1, 18) ^ (w1 >> 3);
    wire [31:0] small_sigma1 = rotr(w14, 17) ^ rotr(w14, 19) ^ (w14 >> 10);
    wire [31:0] w16          = small_sigma1 + w9 + small_sigma0 + w0;

    always @(posedge clk) begin
        state_q  <= {t1 + t2, a, b, c, d + t1, e, f, g};
        window_q <= {w[479:0], w16};
    end

    // Only the low 6 bits of the round index are meaningful (BASE+FOLD <= 64).
    wire unused_ok = &{1'b0, round_wide[31:6]};

endmodule

`default_nettype wire
