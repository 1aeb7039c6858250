// The decoder side of the range coder keyface's motion is coded with (docs/bitstream.md §9.3):
// constriction 0.5's queue coder (`RangeEncoder`: 32-bit words, 64-bit state, 24-bit
// probabilities) and the two entropy models keyface uses with it, a leakily quantised Laplace
// distribution and the "fast" (non-perfect) categorical model. Written from the description of
// the algorithms; every floating-point step that decides a probability is the same IEEE-754
// double operation as in constriction, so the decoded symbols are bit-exact
// (tests/test_js_decoder.py checks them against the Python decoder).

export const PRECISION = 24;
const TOTAL = 2 ** PRECISION;
const WORD = 2n ** 32n;

export class RangeCoderError extends Error {}

// ------------------------------------------------------------------------ exp
// constriction's Laplace model evaluates exp() with the `libm` crate that is linked into its
// Python extension (a port of FreeBSD's e_exp.c, fdlibm). JS engines need not use the same
// algorithm (V8 happens to, JavaScriptCore calls the system libm), so the same algorithm is
// written out here: plain double arithmetic, hence the same result on every engine.
// Algorithm and constants: fdlibm e_exp.c, Copyright (C) 2004 by Sun Microsystems, Inc.
// "Permission to use, copy, modify, and distribute this software is freely granted,
// provided that this notice is preserved."

const LN2HI = 6.93147180369123816490e-1;
const LN2LO = 1.90821492927058770002e-10;
const INVLN2 = 1.44269504088896338700e0;
const P1 = 1.66666666666666019037e-1;
const P2 = -2.77777777770155933842e-3;
const P3 = 6.61375632143793436117e-5;
const P4 = -1.65339022054652515390e-6;
const P5 = 4.13813679705723846039e-8;
const F64 = new Float64Array(1);
const U32 = new Uint32Array(F64.buffer); // little-endian: U32[1] is the high word

function scalbn(y, n) {
  if (n > 1023) {
    y *= 2 ** 1023;
    n -= 1023;
    if (n > 1023) {
      y *= 2 ** 1023;
      n -= 1023;
      if (n > 1023) n = 1023;
    }
  } else if (n < -1022) {
    y *= 2 ** -1022 * 2 ** 53;
    n += 1022 - 53;
    if (n < -1022) {
      y *= 2 ** -1022 * 2 ** 53;
      n += 1022 - 53;
      if (n < -1022) n = -1022;
    }
  }
  return y * 2 ** n;
}

/** e**x, bit-exact with fdlibm's e_exp.c (and the Rust `libm` crate). */
export function fdlibmExp(x) {
  F64[0] = x;
  let hx = U32[1];
  const sign = hx >>> 31;
  hx &= 0x7fffffff;
  if (hx >= 0x4086232b) {
    if (Number.isNaN(x)) return x;
    if (x > 709.782712893383973096) return Infinity;
    if (x < -745.13321910194110842) return 0;
  }
  let k;
  let hi;
  let lo;
  if (hx > 0x3fd62e42) {
    if (hx >= 0x3ff0a2b2) k = Math.trunc(INVLN2 * x + (sign ? -0.5 : 0.5));
    else k = 1 - sign - sign;
    hi = x - k * LN2HI;
    lo = k * LN2LO;
    x = hi - lo;
  } else if (hx > 0x3e300000) {
    k = 0;
    hi = x;
    lo = 0;
  } else {
    return 1 + x;
  }
  const xx = x * x;
  const c = x - xx * (P1 + xx * (P2 + xx * (P3 + xx * (P4 + xx * P5))));
  const y = 1 + ((x * c) / (2 - c) - lo + hi);
  return k === 0 ? y : scalbn(y, k);
}

// ------------------------------------------------------------------------ models
// A model maps a quantile q (0 <= q < 2**24) to {symbol, left, prob} with
// left <= q < left + prob; the decoder only needs this direction.

/**
 * constriction's QuantizedLaplace(min, max) with mean 0 and scale `b`: a Laplace
 * distribution quantised to bins of width 1, in fixed point with a leak of one unit per
 * symbol so every symbol of min..max stays codable.
 */
export class QuantizedLaplace {
  constructor(min, max) {
    this.min = min;
    this.max = max;
    // LeakyQuantizer: free weight = (2**24 - 1) - (max - min)
    this.freeWeight = TOTAL - 1 - (max - min);
  }

  /** Left cumulative of `symbol` (fixed point) for scale b. */
  left(symbol, b) {
    if (symbol === this.min) return 0;
    const x = symbol - 0.5;
    const cdf = x <= 0 ? 0.5 * fdlibmExp(x / b) : 1 - 0.5 * fdlibmExp(-x / b);
    return Math.floor(this.freeWeight * cdf) + (symbol - this.min);
  }

  decode(q, b) {
    // Start near the inverse CDF (any start gives the same symbol: the search below finds
    // the one symbol whose interval holds q), then gallop and bisect on left().
    const p = (q + 0.5) / TOTAL;
    let guess = p > 0.5 ? -b * Math.log(2 - 2 * p) : b * Math.log(2 * p);
    guess = Math.trunc(guess);
    if (!(guess >= this.min)) guess = this.min;
    if (guess > this.max) guess = this.max;
    let lo; // left(lo) <= q
    let hi; // left(hi) > q (or hi = max + 1)
    if (this.left(guess, b) <= q) {
      lo = guess;
      let step = 1;
      hi = lo + step;
      while (hi <= this.max && this.left(hi, b) <= q) {
        lo = hi;
        step *= 2;
        hi = lo + step;
      }
      if (hi > this.max + 1) hi = this.max + 1;
    } else {
      hi = guess;
      let step = 1;
      lo = hi - step;
      while (lo > this.min && this.left(lo, b) > q) {
        hi = lo;
        step *= 2;
        lo = hi - step;
      }
      if (lo < this.min) lo = this.min;
    }
    while (hi - lo > 1) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (this.left(mid, b) <= q) lo = mid;
      else hi = mid;
    }
    const left = this.left(lo, b);
    const right = lo === this.max ? TOTAL : this.left(lo + 1, b);
    return { symbol: lo, left, prob: right - left };
  }
}

/**
 * constriction's Categorical(probabilities, perfect=False) (the "fast" contiguous model):
 * left[i] = floor(cum_i * scale) + i with cum_i the running sum of the probabilities and
 * scale = (2**24 - n) / sum; the last symbol ends at 2**24.
 */
export class Categorical {
  constructor(probabilities) {
    const n = probabilities.length;
    let normalization = 0;
    for (const p of probabilities) normalization += p;
    const scale = (TOTAL - n) / normalization;
    this.lefts = new Array(n + 1);
    let cum = 0;
    for (let i = 0; i < n; i++) {
      this.lefts[i] = Math.floor(cum * scale) + i;
      cum += probabilities[i];
    }
    this.lefts[n] = TOTAL;
  }

  decode(q) {
    const lefts = this.lefts;
    let s = 0;
    while (s < lefts.length - 2 && lefts[s + 1] <= q) s++;
    return { symbol: s, left: lefts[s], prob: lefts[s + 1] - lefts[s] };
  }
}

// ------------------------------------------------------------------------ the coder

/**
 * constriction's RangeDecoder<u32, u64> over 32-bit words. Only the distance
 * `point - lower` matters to decoding, so that is what is kept (`diff`, with `range`).
 * Words past the end read as zeros, as in constriction.
 */
export class RangeDecoder {
  constructor(words) {
    this.words = words;
    this.next = 0;
    let point = 0n;
    let read = 0;
    while (read < 2 && this.next < words.length) {
      point = (point << 32n) | BigInt(words[this.next++]);
      read++;
    }
    if (read === 1) point <<= 32n;
    this.diff = point; // point - lower, lower = 0
    this.range = (1n << 64n) - 1n;
  }

  /** Decode one symbol with `model.decode(q, ...args)`. */
  decode(model, ...args) {
    const scale = this.range >> BigInt(PRECISION);
    const quantile = this.diff / scale;
    if (quantile >= BigInt(TOTAL)) {
      throw new RangeCoderError("Tried to decode from compressed data that is invalid for the employed entropy model.");
    }
    const { symbol, left, prob } = model.decode(Number(quantile), ...args);
    this.diff -= scale * BigInt(left);
    this.range = scale * BigInt(prob);
    if (this.range < WORD) {
      this.range <<= 32n;
      const word = this.next < this.words.length ? this.words[this.next++] : 0;
      this.diff = (this.diff << 32n) | BigInt(word);
    }
    return symbol;
  }
}
