// Intra pictures in the browser (docs/bitstream.md §9.2): KEYFRAME and DETAIL pictures decoded
// by the browser's own image decoder (AVIF, and HEIF where the browser has it; the raw HEVC and
// VVC bitstreams of the hevc and vvc codecs have no browser decoder), and the DETAIL blend
// (keyface.codec.detail.blend_detail: the same float32 arithmetic, rounded half to even).

import { BitstreamError } from "./wire.js";

export const BROWSER_INTRA = { avif: "image/avif", heif: "image/heif" };
const FEATHER = 3;
export const INTRA_DECODE_MARGIN = 64;

/** keyface.codec.limits.intra_max_pixels: what a picture of `width` x `height` may declare. */
export function intraMaxPixels(width, height) {
  return (width + INTRA_DECODE_MARGIN) * (2 * height + 2 * INTRA_DECODE_MARGIN);
}

class IntraError extends Error {}

function u32be(d, p) {
  return ((d[p] << 24) | (d[p + 1] << 16) | (d[p + 2] << 8) | d[p + 3]) >>> 0;
}

/** The boxes of d[start:end]: [{type, start (payload), end}]; IntraError if they do not tile it
 * exactly (keyface.intra._base.check_isobmff at the top level). */
function boxes(d, start, end, what) {
  const out = [];
  let pos = start;
  while (pos < end) {
    if (end - pos < 8) throw new IntraError(`corrupt ${what} data (truncated box)`);
    let size = u32be(d, pos);
    let head = 8;
    if (size === 1 && end - pos >= 16) {
      size = u32be(d, pos + 8) * 2 ** 32 + u32be(d, pos + 12);
      head = 16;
    } else if (size === 0) {
      size = end - pos;
    }
    if (size < head || pos + size > end) throw new IntraError(`corrupt ${what} data (truncated box)`);
    out.push({ type: String.fromCharCode(d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7]), start: pos + head, end: pos + size });
    pos += size;
  }
  return out;
}

/**
 * The picture size an AVIF/HEIF file declares (its largest 'ispe' property), read from the
 * boxes before anything is decoded, so a file that declares a huge picture is refused before
 * the browser allocates it (as the Python decoders are told max_pixels). IntraError if the
 * file is not a sequence of boxes starting with 'ftyp', or declares no size.
 */
export function declaredSize(data, what) {
  if (data.length < 16 || String.fromCharCode(data[4], data[5], data[6], data[7]) !== "ftyp") {
    throw new IntraError(`corrupt ${what} data (not a ${what.toUpperCase()} file)`);
  }
  let best = null;
  const find = (list, type) => list.filter((b) => b.type === type);
  for (const meta of find(boxes(data, 0, data.length, what), "meta")) {
    for (const iprp of find(boxes(data, meta.start + 4, meta.end, what), "iprp")) {
      for (const ipco of find(boxes(data, iprp.start, iprp.end, what), "ipco")) {
        for (const ispe of find(boxes(data, ipco.start, ipco.end, what), "ispe")) {
          if (ispe.end - ispe.start < 12) throw new IntraError(`corrupt ${what} data (truncated box)`);
          const w = u32be(data, ispe.start + 4);
          const h = u32be(data, ispe.start + 8);
          if (best === null || w * h > best.width * best.height) best = { width: w, height: h };
        }
      }
    }
  }
  if (best === null) throw new IntraError(`corrupt ${what} data (no picture size)`);
  return best;
}

/** Whether this page can decode pictures of the header's `intraCodec`. */
export function canDecodeIntra(codec) {
  return codec in BROWSER_INTRA && typeof createImageBitmap === "function";
}

/**
 * What is checked before a picture is handed to the browser's decoder: the file's boxes, and
 * the size it declares against the decoder's limit for a `width` x `height` picture
 * (keyface.codec.limits.intra_max_pixels); BitstreamError as DecoderCore words it.
 */
export function checkPicture(data, codec, width, height, what = "keyframe") {
  const limit = intraMaxPixels(width, height);
  try {
    const size = declaredSize(data, codec);
    if (size.width * size.height > limit) {
      throw new IntraError(`${codec} picture of ${size.width}x${size.height} exceeds the ${limit}-pixel limit`);
    }
  } catch (exc) {
    if (exc instanceof IntraError) throw new BitstreamError(`undecodable ${what} picture (${exc.message})`);
    throw exc;
  }
}

/**
 * Decode one intra picture to RGBA bytes (row 0 on top) of exactly `width` x `height`;
 * BitstreamError with DecoderCore's messages otherwise (`what`: "keyframe", "DETAIL").
 */
export async function decodePicture(data, codec, width, height, what = "keyframe", source = "the stream header") {
  const type = BROWSER_INTRA[codec];
  if (type === undefined) throw new BitstreamError(`undecodable ${what} picture (this page cannot decode ${codec} pictures)`);
  checkPicture(data, codec, width, height, what);
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([data], { type }), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (exc) {
    throw new BitstreamError(`undecodable ${what} picture (corrupt ${codec} data: ${exc.message})`);
  }
  if (bitmap.width !== width || bitmap.height !== height) {
    const w = bitmap.width;
    const h = bitmap.height;
    bitmap.close();
    throw new BitstreamError(`${what} picture is ${w}x${h}, ${source} says ${width}x${height}`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return new Uint8Array(ctx.getImageData(0, 0, width, height).data.buffer);
}

function ramp(n, softStart, softEnd) {
  const out = new Float32Array(n).fill(1);
  const k = Math.min(FEATHER, Math.floor(n / 2));
  for (let i = 0; i < k; i++) {
    const step = Math.fround((i + 1) / (FEATHER + 1));
    if (softStart) out[i] = Math.min(out[i], step);
    if (softEnd) out[n - 1 - i] = Math.min(out[n - 1 - i], step);
  }
  return out;
}

function rintHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Blend the RGBA `patch` (w x h) into the RGBA `picture` (width x height) at (x, y), in place. */
export function blendDetail(picture, width, height, patch, w, h, x, y) {
  const rx = ramp(w, x > 0, x + w < width);
  const ry = ramp(h, y > 0, y + h < height);
  const f = Math.fround;
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const weight = f(ry[j] * rx[i]);
      const o = 4 * ((y + j) * width + x + i);
      const p = 4 * (j * w + i);
      for (let c = 0; c < 3; c++) {
        const region = picture[o + c];
        const mixed = f(region + f(weight * f(patch[p + c] - region)));
        picture[o + c] = Math.min(255, Math.max(0, rintHalfEven(mixed)));
      }
    }
  }
  return picture;
}
