// The motion model in the browser (docs/motion.md, docs/bitstream.md §9.3): the face-mesh
// PCA model (mean shape, basis, coder priors, quantiser levels) loaded from the versioned asset
// that keyface.motion.web_export writes (models/models.json + the float32 arrays, checked by
// SHA-256), dequantised parameters -> 478 keypoints, and the body-field grid.

import { sha256Hex } from "./sha256.js";
import { BitstreamError, hex8 } from "./wire.js";

export const MANIFEST_FORMAT = 1;
export const NUM_POSE = 6;
export const REFERENCE_SIZE = 256;

export class ModelError extends Error {
  constructor(message) {
    super(message);
    this.name = "ModelError";
  }
}

/** cv2.Rodrigues: rotation vector -> row-major 3x3 matrix. */
export function rodrigues(rx, ry, rz) {
  const theta = Math.sqrt(rx * rx + ry * ry + rz * rz);
  if (theta < 2.220446049250313e-16) return [1, 0, 0, 0, 1, 0, 0, 0, 1];
  const c = Math.cos(theta);
  const s = Math.sin(theta);
  const c1 = 1 - c;
  const x = rx / theta;
  const y = ry / theta;
  const z = rz / theta;
  return [
    c + c1 * x * x, c1 * x * y - s * z, c1 * x * z + s * y,
    c1 * x * y + s * z, c + c1 * y * y, c1 * y * z - s * x,
    c1 * x * z - s * y, c1 * y * z + s * x, c + c1 * z * z,
  ]; // prettier-ignore
}

/** Orthonormal DCT-II matrix (row u is basis function u), as keyface.motion.field. */
function dctMatrix(n) {
  const d = new Float64Array(n * n);
  for (let u = 0; u < n; u++) {
    for (let k = 0; k < n; k++) {
      let v = Math.cos((Math.PI * (2 * k + 1) * u) / (2 * n)) * Math.sqrt(2 / n);
      if (u === 0) v /= Math.sqrt(2);
      d[u * n + k] = v;
    }
  }
  return d;
}

/** The face-mesh PCA representation at one quantiser level (what a stream's motion uses). */
class FaceMeshPCA {
  constructor(model, level, name, version) {
    const k = model.levelNumCoeffs[level];
    this.name = name;
    this.version = version;
    this.model = model;
    this.numCoeffs = k;
    const d = NUM_POSE + k;
    const row = model.levelSteps.subarray(level * model.maxParams, level * model.maxParams + d);
    this.steps = Array.from(row);
    this.mean = Array.from(model.paramMean.subarray(0, d));
    this.spread = Array.from(model.paramSpread.subarray(0, d));
    this.deltaSpread = Array.from(model.paramDeltaSpread.subarray(0, d));
    this.numKeypoints = model.numKeypoints;
    this.fieldParams = 0;
  }

  get numParams() {
    return this.steps.length;
  }

  /** (numKeypoints x 2) float32 keypoints, row-major, in pixels of a `size` crop. */
  keypoints(params, size) {
    const m = this.model;
    const n = m.numKeypoints;
    const k = this.numCoeffs;
    const rot = rodrigues(params[0], params[1], params[2]);
    const s = Math.exp(params[5]);
    const scale = size / REFERENCE_SIZE;
    const out = new Float32Array(2 * n);
    const stride = 3 * n;
    for (let p = 0; p < n; p++) {
      let x = m.mean[3 * p];
      let y = m.mean[3 * p + 1];
      let z = m.mean[3 * p + 2];
      for (let c = 0; c < k; c++) {
        const w = params[NUM_POSE + c];
        const base = c * stride + 3 * p;
        x += w * m.basis[base];
        y += w * m.basis[base + 1];
        z += w * m.basis[base + 2];
      }
      out[2 * p] = (s * (rot[0] * x + rot[1] * y + rot[2] * z) + params[3]) * scale;
      out[2 * p + 1] = (s * (rot[3] * x + rot[4] * y + rot[5] * z) + params[4]) * scale;
    }
    return out;
  }

  field() {
    return null;
  }
}

/** Face mesh plus the body-motion grid (facemesh-pca-field): the grid's DCT coefficients
 * follow the face-mesh parameters. */
class FaceMeshField extends FaceMeshPCA {
  constructor(model, level, fieldSpec) {
    super(model, level, fieldSpec.name, fieldSpec.version);
    const g = fieldSpec.grid;
    this.grid = g;
    this.dct = dctMatrix(g);
    const flat = [];
    for (let u = 0; u < g; u++) for (let v = 0; v < g; v++) flat.push([u * g + v, u + v]);
    flat.sort((a, b) => a[1] - b[1] || a[0] - b[0]); // stable argsort of u + v
    this.keep = flat.filter(([, band]) => band <= fieldSpec.bands).map(([i]) => i);
    this.baseParams = this.steps.length;
    for (const i of this.keep) {
      const band = Math.floor(i / g) + (i % g);
      const step = fieldSpec.step * (1.0 + fieldSpec.band_growth * band);
      this.steps.push(step, step);
      this.mean.push(0, 0);
      this.spread.push(fieldSpec.spread, fieldSpec.spread);
      this.deltaSpread.push(fieldSpec.delta_spread, fieldSpec.delta_spread);
    }
    this.fieldParams = 2 * this.keep.length;
  }

  keypoints(params, size) {
    return super.keypoints(params, size);
  }

  /** The (G x G x 2) grid, row-major [i][j][x|y], in 256-crop pixels. */
  field(params) {
    const g = this.grid;
    const coeffs = new Float64Array(g * g * 2);
    this.keep.forEach((flat, n) => {
      coeffs[2 * flat] = params[this.baseParams + 2 * n];
      coeffs[2 * flat + 1] = params[this.baseParams + 2 * n + 1];
    });
    const d = this.dct;
    const out = new Float64Array(g * g * 2);
    for (let i = 0; i < g; i++) {
      for (let j = 0; j < g; j++) {
        for (let c = 0; c < 2; c++) {
          let acc = 0;
          for (let u = 0; u < g; u++) {
            for (let v = 0; v < g; v++) acc += d[u * g + i] * coeffs[2 * (u * g + v) + c] * d[v * g + j];
          }
          out[2 * (i * g + j) + c] = acc;
        }
      }
    }
    return out;
  }
}

/** The shipped motion models, from the manifest and the binary it names. */
export class MotionModels {
  /** `manifest`: the parsed models.json; `binaries`: {file name: Uint8Array}. */
  constructor(manifest, binaries) {
    if (manifest.format !== MANIFEST_FORMAT) {
      throw new ModelError(`motion model manifest format ${manifest.format} (this page reads ${MANIFEST_FORMAT})`);
    }
    this.manifest = manifest;
    this.models = {};
    for (const [name, spec] of Object.entries(manifest.models)) {
      const bin = binaries[spec.file];
      if (bin === undefined) throw new ModelError(`motion model ${name}: ${spec.file} is missing`);
      if (bin.length !== spec.bytes) throw new ModelError(`motion model ${name}: ${spec.file} is ${bin.length} bytes, expected ${spec.bytes}`);
      const digest = sha256Hex(bin);
      if (digest !== spec.sha256) throw new ModelError(`motion model ${name}: ${spec.file} has SHA-256 ${digest}, expected ${spec.sha256}`);
      const arrays = {};
      for (const [key, { offset, shape }] of Object.entries(spec.arrays)) {
        const count = shape.reduce((a, b) => a * b, 1);
        const view = new DataView(bin.buffer, bin.byteOffset + offset, 4 * count);
        const arr = new Float64Array(count);
        for (let i = 0; i < count; i++) arr[i] = view.getFloat32(4 * i, true);
        arrays[key] = arr;
      }
      this.models[name] = {
        spec,
        mean: arrays.mean,
        basis: arrays.basis,
        paramMean: arrays.param_mean,
        paramSpread: arrays.param_spread,
        paramDeltaSpread: arrays.param_delta_spread,
        levelSteps: arrays.level_steps,
        levelNumCoeffs: spec.level_num_coeffs,
        maxParams: spec.arrays.level_steps.shape[1],
        numKeypoints: spec.arrays.mean.shape[0],
      };
    }
  }

  /** Fetch models.json and its binaries from `baseUrl` (a URL ending in "/"). */
  static async load(baseUrl, fetchFn = globalThis.fetch) {
    const res = await fetchFn(new URL("models.json", baseUrl));
    if (!res.ok) throw new ModelError(`motion model manifest: HTTP ${res.status}`);
    const manifest = await res.json();
    const binaries = {};
    for (const spec of Object.values(manifest.models)) {
      const r = await fetchFn(new URL(spec.file, baseUrl));
      if (!r.ok) throw new ModelError(`motion model ${spec.file}: HTTP ${r.status}`);
      binaries[spec.file] = new Uint8Array(await r.arrayBuffer());
    }
    return new MotionModels(manifest, binaries);
  }

  names() {
    const out = Object.keys(this.models);
    if (this.manifest.field) out.push(this.manifest.field.name);
    return out.sort();
  }

  /** The representation a stream header names, checked like DecoderCore does. */
  forHeader(header) {
    const field = this.manifest.field;
    const baseName = field && header.motionName === field.name ? field.base : header.motionName;
    const model = this.models[baseName];
    if (model === undefined) {
      throw new BitstreamError(
        `stream needs what this build lacks: unknown motion representation '${header.motionName}' (available: ${this.names().join(", ")})`,
      );
    }
    const version = baseName === header.motionName ? model.spec.version : field.version;
    const digest = model.spec.digest;
    if (version !== header.motionVersion || digest !== header.motionDigest) {
      throw new BitstreamError(
        `stream uses motion model ${header.motionName} v${header.motionVersion} (digest ${hex8(header.motionDigest)}); this build has v${version} (digest ${hex8(digest)})`,
      );
    }
    const level = header.quantLevel;
    if (!(level >= 0 && level < model.levelNumCoeffs.length)) throw new BitstreamError(`header: unknown quantiser level ${level}`);
    if (baseName === header.motionName) return new FaceMeshPCA(model, level, baseName, version);
    return new FaceMeshField(model, level, field);
  }
}
