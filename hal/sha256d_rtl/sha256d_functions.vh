// sha256d_functions.vh - SHA-256 functions and constants (FIPS 180-4), included
// inside the modules that use them (`include "sha256d_functions.vh" in a module
// body). Pure functions: they also serve as Verilog-2005 constant functions, so
// values that depend only on constants (the IV, the padding words) are folded at
// elaboration.

function [31:0] rotr;
    input [31:0] fn_x;
    input integer fn_n;
    begin
        rotr = (fn_x >> fn_n) | (fn_x << (32 - fn_n));
    end
endfunction

function [31:0] big_sigma0;
    input [31:0] fn_x;
    begin
        big_sigma0 = rotr(fn_x, 2) ^ rotr(fn_x, 13) ^ rotr(fn_x, 22);
    end
endfunction

function [31:0] big_sigma1;
    input [31:0] fn_x;
    begin
        big_sigma1 = rotr(fn_x, 6) ^ rotr(fn_x, 11) ^ rotr(fn_x, 25);
    end
endfunction

function [31:0] small_sigma0;
    input [31:0] fn_x;
    begin
        small_sigma0 = rotr(fn_x, 7) ^ rotr(fn_x, 18) ^ (fn_x >> 3);
    end
endfunction

function [31:0] small_sigma1;
    input [31:0] fn_x;
    begin
        small_sigma1 = rotr(fn_x, 17) ^ rotr(fn_x, 19) ^ (fn_x >> 10);
    end
endfunction

function [31:0] choose;
    input [31:0] fn_e;
    input [31:0] fn_f;
    input [31:0] fn_g;
    begin
        choose = (fn_e & fn_f) ^ (~fn_e & fn_g);
    end
endfunction

function [31:0] majority;
    input [31:0] fn_a;
    input [31:0] fn_b;
    input [31:0] fn_c;
    begin
        majority = (fn_a & fn_b) ^ (fn_a & fn_c) ^ (fn_b & fn_c);
    end
endfunction

// Round constant K[t], t = 0..63.
function [31:0] sha256_k;
    input [5:0] fn_t;
    begin
        case (fn_t)
            6'd0:  sha256_k = 32'h428a2f98;  6'd1:  sha256_k = 32'h71374491;
            6'd2:  sha256_k = 32'hb5c0fbcf;  6'd3:  sha256_k = 32'he9b5dba5;
            6'd4:  sha256_k = 32'h3956c25b;  6'd5:  sha256_k = 32'h59f111f1;
            6'd6:  sha256_k = 32'h923f82a4;  6'd7:  sha256_k = 32'hab1c5ed5;
            6'd8:  sha256_k = 32'hd807aa98;  6'd9:  sha256_k = 32'h12835b01;
            6'd10: sha256_k = 32'h243185be;  6'd11: sha256_k = 32'h550c7dc3;
            6'd12: sha256_k = 32'h72be5d74;  6'd13: sha256_k = 32'h80deb1fe;
            6'd14: sha256_k = 32'h9bdc06a7;  6'd15: sha256_k = 32'hc19bf174;
            6'd16: sha256_k = 32'he49b69c1;  6'd17: sha256_k = 32'hefbe4786;
            6'd18: sha256_k = 32'h0fc19dc6;  6'd19: sha256_k = 32'h240ca1cc;
            6'd20: sha256_k = 32'h2de92c6f;  6'd21: sha256_k = 32'h4a7484aa;
            6'd22: sha256_k = 32'h5cb0a9dc;  6'd23: sha256_k = 32'h76f988da;
            6'd24: sha256_k = 32'h983e5152;  6'd25: sha256_k = 32'ha831c66d;
            6'd26: sha256_k = 32'hb00327c8;  6'd27: sha256_k = 32'hbf597fc7;
            6'd28: sha256_k = 32'hc6e00bf3;  6'd29: sha256_k = 32'hd5a79147;
            6'd30: sha256_k = 32'h06ca6351;  6'd31: sha256_k = 32'h14292967;
            6'd32: sha256_k = 32'h27b70a85;  6'd33: sha256_k = 32'h2e1b2138;
            6'd34: sha256_k = 32'h4d2c6dfc;  6'd35: sha256_k = 32'h53380d13;
            6'd36: sha256_k = 32'h650a7354;  6'd37: sha256_k = 32'h766a0abb;
            6'd38: sha256_k = 32'h81c2c92e;  6'd39: sha256_k = 32'h92722c85;
            6'd40: sha256_k = 32'ha2bfe8a1;  6'd41: sha256_k = 32'ha81a664b;
            6'd42: sha256_k = 32'hc24b8b70;  6'd43: sha256_k = 32'hc76c51a3;
            6'd44: sha256_k = 32'hd192e819;  6'd45: sha256_k = 32'hd6990624;
            6'd46: sha256_k = 32'hf40e3585;  6'd47: sha256_k = 32'h106aa070;
            6'd48: sha256_k = 32'h19a4c116;  6'd49: sha256_k = 32'h1e376c08;
            6'd50: sha256_k = 32'h2748774c;  6'd51: sha256_k = 32'h34b0bcb5;
            6'd52: sha256_k = 32'h391c0cb3;  6'd53: sha256_k = 32'h4ed8aa4a;
            6'd54: sha256_k = 32'h5b9cca4f;  6'd55: sha256_k = 32'h682e6ff3;
            6'd56: sha256_k = 32'h748f82ee;  6'd57: sha256_k = 32'h78a5636f;
            6'd58: sha256_k = 32'h84c87814;  6'd59: sha256_k = 32'h8cc70208;
            6'd60: sha256_k = 32'h90befffa;  6'd61: sha256_k = 32'ha4506ceb;
            6'd62: sha256_k = 32'hbef9a3f7;  default: sha256_k = 32'hc67178f2;
        endcase
    end
endfunction

// Initial hash value H0..H7 (i = 0..7).
function [31:0] sha256_iv;
    input integer fn_i;
    begin
        case (fn_i)
            0: sha256_iv = 32'h6a09e667;  1: sha256_iv = 32'hbb67ae85;
            2: sha256_iv = 32'h3c6ef372;  3: sha256_iv = 32'ha54ff53a;
            4: sha256_iv = 32'h510e527f;  5: sha256_iv = 32'h9b05688c;
            6: sha256_iv = 32'h1f83d9ab;  default: sha256_iv = 32'h5be0cd19;
        endcase
    end
endfunction

// Padding words of the header's second block (W4..W15; W0..W3 are the tail and
// the nonce): 0x80000000 after the 80 bytes, then the length 640 bits.
function [31:0] header_pad_word;
    input integer fn_i;
    begin
        header_pad_word = (fn_i == 4) ? 32'h80000000 : (fn_i == 15) ? 32'd640 : 32'd0;
    end
endfunction

// Padding words of the second hash's block (W8..W15; W0..W7 are the first
// digest): 0x80000000 after 32 bytes, then the length 256 bits.
function [31:0] digest_pad_word;
    input integer fn_i;
    begin
        digest_pad_word = (fn_i == 8) ? 32'h80000000 : (fn_i == 15) ? 32'd256 : 32'd0;
    end
endfunction
