// Whole streams (docs/bitstream.md §6, §8): the incremental StreamReader and readStream.
// Mirrors keyface.bitstream.stream (sans-I/O: bytes in, header and packets out).

import { decodeHeaderRecord, headerSize, headerTruncated } from "./header.js";
import { BACKGROUND, END, decodePacket, describeType, packetSize, packetTruncated } from "./packets.js";
import { BitstreamError, toBig } from "./wire.js";

function ruleViolation(header, packet) {
  if (packet.type === BACKGROUND && !header.hasBackground) {
    return "BACKGROUND packet in a stream whose header has has_background = 0";
  }
  if (packet.type === END) {
    const count = toBig(header.frameCount);
    if (count !== 0n && count !== toBig(packet.frameCount)) {
      return `END frame_count ${packet.frameCount} disagrees with the header's frame_count ${header.frameCount}`;
    }
  }
  return null;
}

/**
 * Incremental parser for a stream arriving in pieces of any size: feed(bytes), then
 * nextEvent() until it returns null ({kind: "header", header} first, then
 * {kind: "packet", packet, offset}); close() at the end of the input. After an error every
 * later nextEvent() throws the same error (the format has no resynchronisation markers).
 */
export class StreamReader {
  constructor() {
    this.store = new Uint8Array(1024); // bytes fed; this.buf views the filled part
    this.buf = this.store.subarray(0, 0);
    this.base = 0; // stream offset of buf[0] (consumed bytes are discarded now and then)
    this.pos = 0;
    this.header = null;
    this.ended = false;
    this.error = null;
    this.closed = false;
  }

  get offset() {
    return this.base + this.pos;
  }

  /** Append received bytes (amortised: the store doubles, consumed bytes are dropped). */
  feed(data) {
    if (this.closed) throw new Error("StreamReader.feed() called after close()");
    let used = this.buf.length;
    if (this.header !== null && this.pos >= 65536 && 2 * this.pos >= used) {
      this.store.copyWithin(0, this.pos, used);
      used -= this.pos;
      this.base += this.pos;
      this.pos = 0;
    }
    if (used + data.length > this.store.length) {
      const grown = new Uint8Array(Math.max(2 * this.store.length, used + data.length));
      grown.set(this.store.subarray(0, used));
      this.store = grown;
    }
    this.store.set(data, used);
    this.buf = this.store.subarray(0, used + data.length);
  }

  nextEvent() {
    if (this.error !== null) throw this.error;
    try {
      return this.next();
    } catch (exc) {
      if (exc instanceof BitstreamError) this.error = exc;
      throw exc;
    }
  }

  next() {
    const buf = this.buf;
    const avail = buf.length - this.pos;
    if (this.header === null) {
      const size = headerSize(buf, buf.length);
      if (size === null || size > avail) return null;
      this.header = decodeHeaderRecord(buf.slice(0, size)); // a copy: the store is reused
      this.pos += size;
      return { kind: "header", header: this.header };
    }
    if (avail === 0) return null;
    const at = this.offset;
    if (this.ended) throw new BitstreamError(`unexpected data after the END packet at byte ${at}`, at);
    const size = packetSize(buf, this.pos, buf.length, at);
    if (size === null || size > avail) return null;
    const packet = decodePacket(buf.slice(this.pos, this.pos + size), at); // a copy, as above
    const problem = ruleViolation(this.header, packet);
    if (problem !== null) throw new BitstreamError(`${describeType(packet.type)} at byte ${at}: ${problem}`, at);
    this.pos += size;
    this.ended = packet.type === END;
    return { kind: "packet", packet, offset: at };
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.error !== null) return;
    const avail = this.buf.length;
    if (this.header === null) {
      const size = headerSize(this.buf, avail);
      if (size === null || size > avail) throw headerTruncated(this.buf, avail);
    } else if (this.buf.length - this.pos) {
      const at = this.offset;
      if (this.ended) throw new BitstreamError(`unexpected data after the END packet at byte ${at}`, at);
      const size = packetSize(this.buf, this.pos, avail, at);
      if (size === null || size > this.buf.length - this.pos) throw packetTruncated(this.buf, this.pos, avail, at);
    } else {
      return;
    }
    throw new BitstreamError(
      `close() with a complete record still unread at byte ${this.offset}; call next_event() until it returns None first`,
      this.offset,
    );
  }
}

/**
 * Parse a whole stream held in memory, keeping everything before the first damage:
 * {header, packets, error, validBytes, complete}. A missing or damaged header throws.
 */
export function readStream(data) {
  const reader = new StreamReader();
  reader.feed(data);
  const first = reader.nextEvent();
  if (first === null) {
    reader.close(); // always throws: the input ends inside the header
    throw new Error("unreachable");
  }
  const packets = [];
  let error = null;
  try {
    for (let ev = reader.nextEvent(); ev !== null; ev = reader.nextEvent()) packets.push(ev.packet);
    reader.close();
  } catch (exc) {
    if (!(exc instanceof BitstreamError)) throw exc;
    error = exc;
  }
  const complete = packets.length > 0 && packets[packets.length - 1].type === END;
  return { header: first.header, packets, error, validBytes: reader.offset, complete };
}
