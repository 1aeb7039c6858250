// Intra pictures in the browser (docs/bitstream.md §9.2): KEYFRAME and DETAIL pictures decoded
// by the browser's own image decoder (AVIF, and HEIF where the browser has it; the raw HEVC and
// VVC bitstreams of the hevc and vvc codecs have no browser decoder), and the DETAIL blend
// (keyface.codec.detail.blend_detail: the same float32 arithmetic, rounded half to even).

import { BitstreamError } from "./wire.js";

export const BROWSER_INTRA = { avif: "image/avif", heif: "image/heif" };
const FEATHER = 3;

/** Whether this page can decode pictures of the header's `intraCodec`. */
export function canDecodeIntra(codec) {
  return codec in BROWSER_INTRA && typeof createImageBitmap === "function";
}

/**
 * Decode one intra picture to RGBA bytes (row 0 on top) of exactly `width` x `height`;
 * BitstreamError with DecoderCore's messages otherwise (`what`: "keyframe", "DETAIL").
 */
export async function decodePicture(data, codec, width, height, what = "keyframe", source = "the stream header") {
  const type = BROWSER_INTRA[codec];
  if (type === undefined) throw new BitstreamError(`undecodable ${what} picture (this page cannot decode ${codec} pictures)`);
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
