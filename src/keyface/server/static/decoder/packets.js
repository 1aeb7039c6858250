// Packets (docs/bitstream.md §5, §14.2):  type u8 | payload_len varint | payload | crc u32
// Mirrors keyface.bitstream.packets: the same checks, in the same order, with the same messages.
// A packet is a plain object {type, name, ...fields}; byte fields are Uint8Array views.

import {
  BitstreamError,
  Cursor,
  FieldError,
  MAX_PAYLOAD_LEN,
  Malformed,
  NeedMore,
  VARINT_LIMIT,
  checkInt,
  crc32,
  hex2,
  hex8,
  readU32,
  scanVarint,
  toBig,
} from "./wire.js";

export const KEYFRAME = 0x01;
export const MOTION = 0x02;
export const BACKGROUND = 0x03;
export const REFRESH_REQUEST = 0x04;
export const DETAIL = 0x05;
export const AUX = 0x06;
export const END = 0x7f;
export const MOTION_FLAG_RESET = 0x01;
const MAX_VARINT = VARINT_LIMIT - 1n;

export const PACKET_NAMES = {
  [KEYFRAME]: "KEYFRAME",
  [MOTION]: "MOTION",
  [BACKGROUND]: "BACKGROUND",
  [REFRESH_REQUEST]: "REFRESH_REQUEST",
  [DETAIL]: "DETAIL",
  [AUX]: "AUX",
  [END]: "END",
};

/** "MOTION packet", or "packet of unknown type 0x42". */
export function describeType(type) {
  const name = PACKET_NAMES[type];
  return name === undefined ? `packet of unknown type 0x${hex2(type)}` : `${name} packet`;
}

function varintLen(v) {
  let n = 1;
  let x = toBig(v);
  while (x >= 128n) {
    x >>= 7n;
    n += 1;
  }
  return n;
}

function checkPayloadSize(where, size) {
  if (size > MAX_PAYLOAD_LEN) throw new FieldError(where, `payload is ${size} bytes long (at most ${MAX_PAYLOAD_LEN})`);
}

const PARSERS = {
  [KEYFRAME](payload) {
    const w = "KEYFRAME packet";
    const c = new Cursor(payload, w);
    const frameIndex = c.varint("frame_index");
    const quality = c.u8("quality");
    const data = c.rest();
    checkInt(w, "quality", quality, 0, 100);
    return { type: KEYFRAME, name: "KEYFRAME", frameIndex, quality, data };
  },
  [MOTION](payload) {
    const w = "MOTION packet";
    const c = new Cursor(payload, w);
    const firstFrame = c.varint("first_frame");
    const nFrames = c.varint("n_frames");
    const flags = c.u8("flags");
    if (flags & ~MOTION_FLAG_RESET) throw new FieldError(w, `flags 0x${hex2(flags)} sets bits reserved in v1 (only 0x01 is defined)`);
    const data = c.rest();
    checkInt(w, "n_frames", nFrames, 1, MAX_VARINT);
    if (toBig(firstFrame) + toBig(nFrames) > VARINT_LIMIT) throw new FieldError(w, "first_frame + n_frames exceeds 2**64");
    return { type: MOTION, name: "MOTION", firstFrame, nFrames, reset: Boolean(flags & MOTION_FLAG_RESET), data };
  },
  [BACKGROUND](payload) {
    const c = new Cursor(payload, "BACKGROUND packet");
    const frameIndex = c.varint("frame_index");
    return { type: BACKGROUND, name: "BACKGROUND", frameIndex, data: c.rest() };
  },
  [REFRESH_REQUEST](payload) {
    const c = new Cursor(payload, "REFRESH_REQUEST packet");
    const frameIndex = c.varint("frame_index");
    c.finish();
    return { type: REFRESH_REQUEST, name: "REFRESH_REQUEST", frameIndex };
  },
  [DETAIL](payload) {
    const w = "DETAIL packet";
    const c = new Cursor(payload, w);
    const frameIndex = c.varint("frame_index");
    const x = c.u16("x");
    const y = c.u16("y");
    const width = c.u16("width");
    const height = c.u16("height");
    const quality = c.u8("quality");
    const data = c.rest();
    checkInt(w, "width", width, 1, 0xffff);
    checkInt(w, "height", height, 1, 0xffff);
    checkInt(w, "quality", quality, 0, 100);
    return { type: DETAIL, name: "DETAIL", frameIndex, x, y, width, height, quality, data };
  },
  [AUX](payload) {
    const w = "AUX packet";
    const c = new Cursor(payload, w);
    const firstFrame = c.varint("first_frame");
    const n = c.varint("n");
    if (n === 0 || toBig(n) > BigInt(payload.length)) throw new FieldError(w, `n = ${n} pictures does not fit the payload`);
    const pictures = [];
    for (let k = 0; k < n; k++) {
      const len = c.varint(`picture ${k} length`);
      pictures.push(c.take(typeof len === "bigint" ? Infinity : len, `picture ${k}`));
    }
    c.finish();
    return { type: AUX, name: "AUX", firstFrame, pictures };
  },
  [END](payload) {
    const c = new Cursor(payload, "END packet");
    const frameCount = c.varint("frame_count");
    c.finish();
    return { type: END, name: "END", frameCount };
  },
};

/** Decode a payload of a known or unknown type (FieldError if invalid). */
export function parsePayload(type, payload) {
  const parse = PARSERS[type];
  if (parse === undefined) return { type, name: "unknown", payload };
  const packet = parse(payload);
  // _check_payload_size of the constructors cannot fail for a parsed payload (<= 64 MiB).
  checkPayloadSize(describeType(type), payload.length);
  return packet;
}

/** Total size of the packet at buf[pos] (buf[pos:end] available), or null while unknown. */
export function packetSize(buf, pos, end, at) {
  if (pos >= end) return null;
  const what = describeType(buf[pos]);
  let length;
  let after;
  try {
    ({ value: length, pos: after } = scanVarint(buf, pos + 1, end));
  } catch (exc) {
    if (exc instanceof NeedMore) return null;
    if (exc instanceof Malformed) throw new BitstreamError(`${what} at byte ${at}: payload_len: ${exc.message}`, at);
    throw exc;
  }
  if (length > MAX_PAYLOAD_LEN) {
    throw new BitstreamError(`${what} at byte ${at}: declared payload_len ${length} exceeds the ${MAX_PAYLOAD_LEN}-byte limit`, at);
  }
  return after - pos + length + 4;
}

/** The error for input that ends inside the packet at buf[pos]. */
export function packetTruncated(buf, pos, end, at) {
  const what = describeType(buf[pos]);
  const size = packetSize(buf, pos, end, at);
  const detail = size === null ? `ends after ${end - pos} bytes, inside payload_len` : `needs ${size} bytes, got ${end - pos}`;
  return new BitstreamError(`truncated ${what} at byte ${at} (${detail})`, at);
}

/** Decode one complete packet record (exactly packetSize bytes) found at stream offset `at`. */
export function decodePacket(record, at) {
  const type = record[0];
  const { value: length, pos: start } = scanVarint(record, 1, record.length);
  const stored = readU32(record, start + length);
  const computed = crc32(record, 0, start + length);
  if (stored !== computed) {
    throw new BitstreamError(`CRC mismatch in ${describeType(type)} at byte ${at} (stored 0x${hex8(stored)}, computed 0x${hex8(computed)})`, at);
  }
  try {
    return parsePayload(type, record.subarray(start, start + length));
  } catch (exc) {
    if (exc instanceof FieldError) throw exc.at(at);
    throw exc;
  }
}

/** Parse the packet at data[offset]: {packet, next}. */
export function parsePacket(data, offset = 0) {
  if (!Number.isInteger(offset) || offset < 0 || offset > data.length) {
    throw new BitstreamError(`offset ${offset} is outside the data (0..${data.length})`, null);
  }
  if (offset === data.length) throw new BitstreamError(`expected a packet at byte ${offset}, found end of data`, offset);
  const size = packetSize(data, offset, data.length, offset);
  if (size === null || offset + size > data.length) throw packetTruncated(data, offset, data.length, offset);
  return { packet: decodePacket(data.subarray(offset, offset + size), offset), next: offset + size };
}

export { varintLen };
