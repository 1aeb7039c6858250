// The stream header (docs/bitstream.md §4, §14.1): the file prefix
//   MAGIC "KFAC" | version u8 | header_len varint | header | header_crc u32
// Mirrors keyface.bitstream.header: the same checks, in the same order, with the same messages.

import {
  BitstreamError,
  Cursor,
  FieldError,
  MAX_HEADER_LEN,
  Malformed,
  NeedMore,
  VARINT_LIMIT,
  checkF32,
  checkInt,
  crc32,
  hex2,
  hex8,
  pyBytesRepr,
  pyFloatRepr,
  readU32,
  scanVarint,
} from "./wire.js";

export const MAGIC = [0x4b, 0x46, 0x41, 0x43];
export const READ_VERSIONS = [1, 2];
export const FLAG_CROPPED = 0x01;
export const FLAG_BACKGROUND = 0x02;
export const FLAG_PROMOTES = 0x04;
export const FLAG_AUX = 0x08;
const KNOWN_FLAGS = FLAG_CROPPED | FLAG_BACKGROUND | FLAG_PROMOTES;
const KNOWN_FLAGS_V2 = KNOWN_FLAGS | FLAG_AUX;
export const REFRESH_MODES = ["psnr", "motion", "fixed"];
export const STREAM_MODES = { 0: "animation", 1: "hybrid", 2: "bidirectional" };
export const NO_AUX = "none";
export const MIN_GOP = 5;
export const MAX_GOP = 30;
const HEADER = "header";
const MAX_VARINT = VARINT_LIMIT - 1n;

function parseAux(c) {
  const w = "header aux section";
  const mode = c.u8("mode");
  const gop = c.u8("gop");
  const codec = c.str8("aux_codec");
  const scale = c.u8("aux_scale");
  const qp = c.u8("aux_qp");
  const fusion = c.str8("fusion");
  // AuxInfo.__post_init__, in its order
  if (mode !== 1 && mode !== 2) throw new FieldError(w, `mode must be 1 (hybrid) or 2 (bidirectional), got ${mode}`);
  if (codec === NO_AUX) {
    if (scale !== 0 || mode !== 2) throw new FieldError(w, "aux_codec none needs the bidirectional mode and aux_scale 0");
  } else if (![2, 4, 8].includes(scale)) {
    throw new FieldError(w, `aux_scale must be 2, 4 or 8, got ${scale}`);
  }
  checkInt(w, "aux_qp", qp, 0, 51);
  if (mode === 2 && !(MIN_GOP <= gop && gop <= MAX_GOP)) throw new FieldError(w, `gop must be in ${MIN_GOP}..${MAX_GOP}, got ${gop}`);
  if (mode === 1 && gop !== 0) throw new FieldError(w, `gop must be 0 in hybrid mode, got ${gop}`);
  return { mode, codec, scale, qp, fusion, gop };
}

/** Decode the `header` bytes alone (no magic, length or CRC) of format `version`. */
export function parseHeaderFields(body, version = 1) {
  const c = new Cursor(body, HEADER);
  const width = c.u16("width");
  const height = c.u16("height");
  const fpsNum = c.varint("fps_num");
  const fpsDen = c.varint("fps_den");
  const frameCount = c.varint("frame_count");
  const flags = c.u8("flags");
  const known = version >= 2 ? KNOWN_FLAGS_V2 : KNOWN_FLAGS;
  if (flags & ~known) {
    throw new FieldError(HEADER, `flags 0x${hex2(flags)} sets bits reserved in v${version} (only 0x${hex2(known)} is defined)`);
  }
  if (version >= 2 && !(flags & FLAG_AUX)) throw new FieldError(HEADER, "a version 2 header must have an aux section (flag 0x08)");
  let crop = null;
  if (flags & FLAG_CROPPED) {
    const sourceWidth = c.u16("source_width");
    const sourceHeight = c.u16("source_height");
    const cx = c.f32("crop_cx");
    const cy = c.f32("crop_cy");
    const side = c.f32("crop_side");
    checkInt(HEADER, "crop source_width", sourceWidth, 1, 0xffff);
    checkInt(HEADER, "crop source_height", sourceHeight, 1, 0xffff);
    checkF32(HEADER, "crop cx", cx);
    checkF32(HEADER, "crop cy", cy);
    checkF32(HEADER, "crop side", side);
    if (side <= 0) throw new FieldError(HEADER, `crop side must be > 0, got ${pyFloatRepr(side)}`);
    crop = { sourceWidth, sourceHeight, cx, cy, side };
  }
  const motionName = c.str8("motion_name");
  const motionVersion = c.u8("motion_version");
  const motionDigest = c.u32("motion_digest");
  const quantLevel = c.u8("quant_level");
  const intraCodec = c.str8("intra_codec");
  const refreshMode = c.u8("refresh_mode");
  const bufferSize = c.u8("buffer_size");
  const refreshThreshold = c.f32("refresh_threshold");
  const generator = c.str8("generator");
  const aux = flags & FLAG_AUX ? parseAux(c) : null;
  const extension = c.rest();
  // StreamHeader.__post_init__, in its order
  checkInt(HEADER, "width", width, 1, 0xffff);
  checkInt(HEADER, "height", height, 1, 0xffff);
  checkInt(HEADER, "fps_num", fpsNum, 1, MAX_VARINT);
  checkInt(HEADER, "fps_den", fpsDen, 1, MAX_VARINT);
  if (!REFRESH_MODES[refreshMode]) {
    throw new FieldError(HEADER, `refresh_mode must be 0 (psnr), 1 (motion) or 2 (fixed), got ${refreshMode}`);
  }
  checkInt(HEADER, "buffer_size", bufferSize, 1, 5);
  checkF32(HEADER, "refresh_threshold", refreshThreshold);
  return {
    version: aux ? 2 : 1,
    width,
    height,
    fpsNum,
    fpsDen,
    frameCount,
    crop,
    hasBackground: Boolean(flags & FLAG_BACKGROUND),
    promotes: Boolean(flags & FLAG_PROMOTES),
    motionName,
    motionVersion,
    motionDigest,
    quantLevel,
    intraCodec,
    refreshMode,
    bufferSize,
    refreshThreshold,
    generator,
    aux,
    extension,
    mode: aux ? STREAM_MODES[aux.mode] : "animation",
  };
}

/** Size of the header record at the start of buf[:end], or null while unknown. */
export function headerSize(buf, end) {
  const n = Math.min(end, 4);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== MAGIC[i]) {
      throw new BitstreamError(`not a keyface stream (magic ${pyBytesRepr(buf.subarray(0, Math.min(4, end)))})`, 0);
    }
  }
  if (end <= 4) return null;
  const version = buf[4];
  if (!READ_VERSIONS.includes(version)) {
    throw new BitstreamError(`unsupported keyface stream version ${version} (this build reads 1 and 2)`, 4);
  }
  let length;
  let pos;
  try {
    ({ value: length, pos } = scanVarint(buf, 5, end));
  } catch (exc) {
    if (exc instanceof NeedMore) return null;
    if (exc instanceof Malformed) throw new BitstreamError(`stream header at byte 0: header_len: ${exc.message}`, 0);
    throw exc;
  }
  if (length > MAX_HEADER_LEN) {
    throw new BitstreamError(`stream header at byte 0: declared header_len ${length} exceeds the ${MAX_HEADER_LEN}-byte limit`, 0);
  }
  return pos + length + 4;
}

/** The error for input that ends inside the header record. */
export function headerTruncated(buf, end) {
  if (end === 0) return new BitstreamError("not a keyface stream (empty input)", 0);
  let where;
  if (end < 4) where = "inside the magic";
  else if (end === 4) where = "before the version byte";
  else {
    const size = headerSize(buf, end);
    if (size === null) where = "inside header_len";
    else return new BitstreamError(`truncated stream header at byte 0 (needs ${size} bytes, got ${end})`, 0);
  }
  return new BitstreamError(`truncated stream header at byte 0 (ends after ${end} bytes, ${where})`, 0);
}

/** Decode one complete header record (exactly headerSize bytes). */
export function decodeHeaderRecord(record) {
  const { value: length, pos: start } = scanVarint(record, 5, record.length);
  const stored = readU32(record, start + length);
  const computed = crc32(record, start, start + length);
  if (stored !== computed) {
    throw new BitstreamError(`CRC mismatch in stream header at byte 0 (stored 0x${hex8(stored)}, computed 0x${hex8(computed)})`, 0);
  }
  return parseHeaderFields(record.subarray(start, start + length), record[4]);
}

/** Parse the file prefix at the start of data: {header, size}. */
export function parseHeader(data) {
  const size = headerSize(data, data.length);
  if (size === null || size > data.length) throw headerTruncated(data, data.length);
  return { header: decodeHeaderRecord(data.subarray(0, size)), size };
}
