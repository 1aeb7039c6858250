// Motion entropy decoding (docs/bitstream.md §9.3), mirroring keyface.entropy.motion_coder:
// the adaptive state (prediction, Laplace scales, reference counts) and decodeFrames. All
// arithmetic that feeds the coder's models is the same double-precision arithmetic, in the
// same order, as the Python reference.

import { Categorical, QuantizedLaplace, RangeCoderError, RangeDecoder } from "./rangecoder.js";

export const SYMBOL_LIMIT = 1 << 20;
export const PARAM_RANGE_SPREADS = 256.0;
export const MIN_SCALE = 0.15;
export const ADAPT_RATE = 0.08;
export const MAX_REFERENCES = 5;

const LAPLACE = new QuantizedLaplace(-SYMBOL_LIMIT, SYMBOL_LIMIT - 1);

export class MotionCodingError extends Error {
  constructor(message) {
    super(message);
    this.name = "MotionCodingError";
  }
}

/** numpy's round (half to even) of a double. */
export function roundHalfEven(x) {
  const r = Math.round(x); // half up
  if (r - x === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/** The adaptive state mirrored by encoder and decoder (MotionCoderState). */
export class MotionCoderState {
  /** `steps`, `mean`, `spread`, `deltaSpread`: arrays of doubles, one per parameter. */
  constructor(steps, mean, spread, deltaSpread) {
    const d = steps.length;
    this.steps = Float64Array.from(steps);
    this.priorQ = new Array(d);
    this.absScale = new Float64Array(d);
    this.deltaPrior = new Float64Array(d);
    this.qMin = new Array(d);
    this.qMax = new Array(d);
    for (let i = 0; i < d; i++) {
      this.priorQ[i] = roundHalfEven(mean[i] / steps[i]);
      this.absScale[i] = Math.max(spread[i] / steps[i], MIN_SCALE);
      this.deltaPrior[i] = Math.max(deltaSpread[i] / steps[i], MIN_SCALE);
      const reach = Math.ceil(Math.max((PARAM_RANGE_SPREADS * spread[i]) / steps[i], 64.0));
      this.qMin[i] = this.priorQ[i] - reach;
      this.qMax[i] = this.priorQ[i] + reach;
    }
    this.reset();
  }

  get numParams() {
    return this.steps.length;
  }

  reset() {
    this.stretch = 1.0;
    this.prev = null;
    this.scale = Float64Array.from(this.deltaPrior);
    this.refCounts = [8, 1, 1, 1, 1];
  }

  snapshot() {
    return { prev: this.prev && this.prev.slice(), scale: this.scale.slice(), refCounts: this.refCounts.slice() };
  }

  /** Continue from `snapshot`, taken `distance` frames before the next frame (live links). */
  restore(snapshot, distance = 1) {
    if (snapshot.scale.length !== this.numParams) throw new Error("snapshot of another motion coder");
    if (distance < 1) throw new Error("distance must be >= 1");
    this.prev = snapshot.prev && snapshot.prev.slice();
    this.scale = snapshot.scale.slice();
    this.refCounts = snapshot.refCounts.slice();
    // Python: float(distance) ** 0.5; equal to the correctly rounded sqrt for every distance
    // a stream can name (1..32, checked in tests/test_js_decoder.py).
    this.stretch = Math.sqrt(distance);
  }

  dequantize(q) {
    const out = new Float64Array(q.length);
    for (let i = 0; i < q.length; i++) out[i] = q[i] * this.steps[i];
    return out;
  }

  /** [prediction, scales] for the next frame. */
  model() {
    if (this.prev === null) return [this.priorQ, this.absScale];
    if (this.stretch !== 1.0) return [this.prev, this.scale.map((s) => s * this.stretch)];
    return [this.prev, this.scale];
  }

  update(q, reference) {
    if (this.prev !== null) {
      const keep = 1 - ADAPT_RATE;
      for (let i = 0; i < q.length; i++) {
        const r = Math.abs(q[i] - this.prev[i]) / this.stretch;
        this.scale[i] = Math.max(keep * this.scale[i] + ADAPT_RATE * r, MIN_SCALE);
      }
    }
    this.stretch = 1.0;
    this.prev = q.slice();
    if (reference !== null) {
      this.refCounts[reference] += 1.0;
      let sum = 0;
      for (const c of this.refCounts) sum += c;
      if (sum > 1024) this.refCounts = this.refCounts.map((c) => Math.max(c / 2, 1.0));
    }
  }

  refModel() {
    let sum = 0;
    for (const c of this.refCounts) sum += c;
    return new Categorical(this.refCounts.map((c) => c / sum));
  }
}

/**
 * Decode one MOTION payload (Uint8Array) holding `isKeyframe.length` frames, advancing
 * `state`: [{q: number[], reference: number|null}]. Throws MotionCodingError.
 */
export function decodeFrames(state, data, isKeyframe) {
  if (data.length % 4) throw new MotionCodingError(`motion payload length ${data.length} is not a multiple of 4`);
  const words = new Uint32Array(data.length / 4);
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < words.length; i++) words[i] = view.getUint32(4 * i, true);
  const decoder = new RangeDecoder(words);
  const out = [];
  try {
    for (const key of isKeyframe) {
      let reference = null;
      if (!key) reference = decoder.decode(state.refModel());
      const [pred, scale] = state.model();
      const q = new Array(pred.length);
      for (let i = 0; i < pred.length; i++) q[i] = pred[i] + decoder.decode(LAPLACE, scale[i]);
      for (let d = 0; d < q.length; d++) {
        if (q[d] < state.qMin[d] || q[d] > state.qMax[d]) {
          throw new MotionCodingError(
            `corrupt motion payload (frame ${out.length} of the packet: parameter ${d} = ${q[d]} steps, outside ${state.qMin[d]}..${state.qMax[d]})`,
          );
        }
      }
      state.update(q, reference);
      out.push({ q, reference });
    }
  } catch (exc) {
    if (exc instanceof RangeCoderError) throw new MotionCodingError(`corrupt motion payload (${exc.message})`);
    throw exc;
  }
  return out;
}
