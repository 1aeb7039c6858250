// Conference datagrams (docs/bitstream.md §12): one tag byte, then the stream header, one
// frame's packets, feedback or an ACK. Mirrors keyface.server.datagram.parse_datagram: the same
// checks, in the same order, with the same messages (DatagramError).

import { parseHeader } from "./header.js";
import { AUX, KEYFRAME, MOTION, REFRESH_REQUEST, parsePacket } from "./packets.js";
import { BitstreamError, decodeVarint, readU32, toBig } from "./wire.js";

export const DATAGRAM_VERSION = 1;
export const KIND_HEADER = 1;
export const KIND_FRAME = 2;
export const KIND_FEEDBACK = 3;
export const KIND_ACK = 4;
export const KIND_AUX_REFRESH = 5;
export const FLAG_IDR = 0x08;
export const FLAG_BASED = 0x10;
export const FLAG_REDUNDANT = 0x20;
export const MAX_COPIES = 2;
export const ACK_SPAN = 32;
export const MAX_BASE_BACK = 32;
export const MAX_DATAGRAM = 1 << 20;

export class DatagramError extends Error {
  constructor(message) {
    super(message);
    this.name = "DatagramError";
  }
}

function packets(data, offset) {
  const out = [];
  while (offset < data.length) {
    const { packet, next } = parsePacket(data, offset);
    out.push(packet);
    offset = next;
  }
  return out;
}

function checkBase(frameIndex, baseBack, motion) {
  if (baseBack === null) return;
  if ((toBig(baseBack) === 0n) !== motion.reset) throw new DatagramError("base_back must be 0 exactly when the MOTION packet resets");
  const limit = toBig(frameIndex) < BigInt(MAX_BASE_BACK) ? toBig(frameIndex) : BigInt(MAX_BASE_BACK);
  if (toBig(baseBack) > limit) throw new DatagramError(`base_back ${baseBack} reaches before frame 0 or too far back`);
}

function frame(fields) {
  return {
    kind: KIND_FRAME,
    idr: false,
    frameIndex: 0,
    keyBack: 0,
    keyframe: null,
    motion: null,
    baseBack: null,
    keys: null,
    copies: [],
    aux: null,
    ...fields,
  };
}

function copies(data, pos, frameIndex) {
  let n;
  ({ value: n, pos } = decodeVarint(data, pos));
  const limit = toBig(frameIndex) < BigInt(MAX_COPIES) ? toBig(frameIndex) : BigInt(MAX_COPIES);
  if (!(toBig(n) >= 1n && toBig(n) <= limit)) throw new DatagramError(`${n} redundant copies in frame ${frameIndex}`);
  const out = [];
  const first = toBig(frameIndex) - toBig(n);
  for (let index = first; index < toBig(frameIndex); index++) {
    let keyBack;
    let baseBack;
    let keys;
    ({ value: keyBack, pos } = decodeVarint(data, pos));
    ({ value: baseBack, pos } = decodeVarint(data, pos));
    ({ value: keys, pos } = decodeVarint(data, pos));
    const parsed = parsePacket(data, pos);
    const packet = parsed.packet;
    pos = parsed.next;
    const idx = Number(index);
    if (packet.type !== MOTION || toBig(packet.firstFrame) !== index || packet.nFrames !== 1) {
      throw new DatagramError(`redundant copy must be frame ${idx}'s MOTION packet`);
    }
    if (toBig(keyBack) > index) throw new DatagramError("inconsistent keyframe distance in the redundant copy");
    checkBase(idx, baseBack, packet);
    out.push(frame({ frameIndex: idx, keyBack, motion: packet, baseBack, keys }));
  }
  return { copies: out, pos };
}

/** Parse one datagram (Uint8Array); throws DatagramError for anything malformed. */
export function parseDatagram(data) {
  if (!(data instanceof Uint8Array) || data.length < 1 || data.length > MAX_DATAGRAM) {
    throw new DatagramError("datagram is empty, too long or not bytes");
  }
  const tag = data[0];
  if (tag >> 6 !== DATAGRAM_VERSION) throw new DatagramError(`unknown datagram version (tag 0x${tag.toString(16).padStart(2, "0")})`);
  const kind = tag & 0x07;
  const idr = Boolean(tag & FLAG_IDR);
  const based = Boolean(tag & FLAG_BASED);
  const redundant = Boolean(tag & FLAG_REDUNDANT);
  if ((idr || based || redundant) && kind !== KIND_FRAME) throw new DatagramError("frame flags on a datagram that is not a frame");
  if (redundant && !based) throw new DatagramError("redundant motion in a frame that names no base");
  let frameIndex;
  let keyBack;
  let baseBack = null;
  let keys = null;
  let copied = [];
  let list;
  try {
    if (kind === KIND_HEADER) {
      const { header, size } = parseHeader(data.subarray(1));
      if (size !== data.length - 1) throw new DatagramError("bytes after the stream header");
      return { kind, header };
    }
    if (kind === KIND_FEEDBACK) {
      const list1 = packets(data, 1);
      if (list1.length !== 1 || list1[0].type !== REFRESH_REQUEST) throw new DatagramError("feedback datagram must hold one REFRESH_REQUEST");
      return { kind, refresh: list1[0] };
    }
    if (kind === KIND_ACK) {
      const { value: newest, pos } = decodeVarint(data, 1);
      if (data.length !== pos + 4) throw new DatagramError("ack datagram must be newest varint + 4 bytes");
      return { kind, ack: { newest, held: readU32(data, pos) } };
    }
    if (kind === KIND_AUX_REFRESH) {
      const { value, pos } = decodeVarint(data, 1);
      if (pos !== data.length) throw new DatagramError("aux refresh datagram must be one varint");
      return { kind, auxRefresh: value };
    }
    if (kind !== KIND_FRAME) throw new DatagramError(`unknown datagram kind ${kind}`);
    let pos;
    ({ value: frameIndex, pos } = decodeVarint(data, 1));
    ({ value: keyBack, pos } = decodeVarint(data, pos));
    if (based) {
      ({ value: baseBack, pos } = decodeVarint(data, pos));
      ({ value: keys, pos } = decodeVarint(data, pos));
    }
    if (redundant) ({ copies: copied, pos } = copies(data, pos, frameIndex));
    list = packets(data, pos);
  } catch (exc) {
    if (exc instanceof BitstreamError) throw new DatagramError(exc.message);
    throw exc;
  }
  const n = list.length;
  const aux = n >= 2 && list[n - 2].type === AUX ? list[n - 2] : null;
  const keyframe = n === 2 + (aux !== null ? 1 : 0) ? list[0] : null;
  const motion = n ? list[n - 1] : null;
  if (!(n >= 1 && n <= 3) || motion.type !== MOTION || (keyframe !== null && keyframe.type !== KEYFRAME) || (n === 3 && (keyframe === null || aux === null))) {
    throw new DatagramError("frame datagram must hold [KEYFRAME] [AUX] MOTION");
  }
  const fi = toBig(frameIndex);
  if (aux !== null && (toBig(aux.firstFrame) !== fi || aux.pictures.length !== 1)) {
    throw new DatagramError("AUX packet does not hold exactly the datagram's frame");
  }
  if (toBig(motion.firstFrame) !== fi || motion.nFrames !== 1) throw new DatagramError("MOTION packet does not cover exactly the datagram's frame");
  if (keyframe !== null && (toBig(keyframe.frameIndex) !== fi || toBig(keyBack) !== 0n)) {
    throw new DatagramError("KEYFRAME packet is not for the datagram's frame");
  }
  if (toBig(keyBack) > fi || (idr && keyframe === null)) throw new DatagramError("inconsistent keyframe distance or IDR flag");
  checkBase(frameIndex, baseBack, motion);
  return frame({ idr, frameIndex, keyBack, keyframe, motion, baseBack, keys, copies: copied, aux });
}
