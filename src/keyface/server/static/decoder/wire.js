// Wire-level building blocks of the keyface container (docs/bitstream.md §2-3): the errors,
// LEB128 varints, CRC-32, a bounds-checked cursor and Python-style value formatting (so the
// messages read exactly like the reference implementation's, keyface.bitstream._wire).

export const MAX_VARINT_BYTES = 10;
export const VARINT_LIMIT = 1n << 64n;
export const MAX_PAYLOAD_LEN = 64 * 1024 * 1024;
export const MAX_HEADER_LEN = 1024 * 1024;

/** A keyface stream (or a datagram) is invalid. `offset`: stream offset, or null. */
export class BitstreamError extends Error {
  constructor(message, offset = null) {
    super(message);
    this.name = "BitstreamError";
    this.offset = offset;
  }
}

/** A field-level problem inside one record; `at(offset)` locates it in the stream. */
export class FieldError extends BitstreamError {
  constructor(where, detail) {
    super(`${where}: ${detail}`);
    this.name = "FieldError";
    this.where = where;
    this.detail = detail;
  }

  at(offset) {
    return new BitstreamError(`${this.where} at byte ${offset}: ${this.detail}`, offset);
  }
}

/** The buffer ends before the item being scanned is complete (internal). */
export class NeedMore extends Error {}

/** The bytes can never become valid (internal; message = the detail). */
export class Malformed extends Error {}

// ------------------------------------------------------------------------- formatting

/** Python's repr() of a bytes object, e.g. b'RIFF' or b'\x00\xff'. */
export function pyBytesRepr(bytes) {
  let hasSingle = false;
  let hasDouble = false;
  for (const b of bytes) {
    if (b === 0x27) hasSingle = true;
    if (b === 0x22) hasDouble = true;
  }
  const quote = hasSingle && !hasDouble ? '"' : "'";
  let out = "b" + quote;
  for (const b of bytes) {
    if (b === 0x5c) out += "\\\\";
    else if (b === 0x09) out += "\\t";
    else if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b === quote.charCodeAt(0)) out += "\\" + quote;
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += "\\x" + b.toString(16).padStart(2, "0");
  }
  return out + quote;
}

/** Python's repr() of a float: 1.0, -0.5, 1e-05, 1.5e+16, nan, inf. */
export function pyFloatRepr(x) {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, expText] = x.toExponential().split("e"); // shortest round-trip digits
  const exp = Number(expText);
  const negative = mant.startsWith("-");
  const digits = mant.replace("-", "").replace(".", "");
  let body;
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, "0");
    body = `${m}e${exp < 0 ? "-" : "+"}${e}`;
  } else if (exp < 0) {
    body = `0.${"0".repeat(-exp - 1)}${digits}`;
  } else if (digits.length <= exp + 1) {
    body = `${digits}${"0".repeat(exp + 1 - digits.length)}.0`;
  } else {
    body = `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  }
  return negative ? `-${body}` : body;
}

export function hex2(n) {
  return n.toString(16).padStart(2, "0");
}

export function hex8(n) {
  return (n >>> 0).toString(16).padStart(8, "0");
}

// ------------------------------------------------------------------------- CRC-32

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** zlib's CRC-32 of bytes[start:end]. */
export function crc32(bytes, start = 0, end = bytes.length) {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ------------------------------------------------------------------------- integers

/** A varint value as JS keeps it: a Number when exact (< 2**53), else a BigInt. */
export function normInt(big) {
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

export function toBig(v) {
  return typeof v === "bigint" ? v : BigInt(v);
}

/** Decode the varint at buf[pos:end]: {value, pos}. Throws NeedMore / Malformed. */
export function scanVarint(buf, pos, end) {
  let value = 0; // exact while below 2**49 (7 groups)
  let big = null;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos + i >= end) throw new NeedMore();
    const byte = buf[pos + i];
    if (i < 7) value += (byte & 0x7f) * 2 ** (7 * i);
    else {
      if (big === null) big = BigInt(value);
      big |= BigInt(byte & 0x7f) << BigInt(7 * i);
    }
    if (!(byte & 0x80)) {
      if (i > 0 && byte === 0) throw new Malformed("non-minimal varint (redundant trailing zero group)");
      if (big !== null) {
        if (big >= VARINT_LIMIT) throw new Malformed("varint exceeds 64 bits");
        return { value: normInt(big), pos: pos + i + 1 };
      }
      return { value, pos: pos + i + 1 };
    }
  }
  throw new Malformed(`varint longer than ${MAX_VARINT_BYTES} bytes`);
}

/** The bytes of non-negative integer n as a varint (LEB128, as keyface.bitstream._wire). */
export function encodeVarint(n) {
  const out = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

/** The varint at data[offset]: {value, pos}; BitstreamError on truncation or bad encoding. */
export function decodeVarint(data, offset = 0) {
  try {
    return scanVarint(data, offset, data.length);
  } catch (exc) {
    if (exc instanceof NeedMore) throw new BitstreamError(`truncated varint at byte ${offset}`, offset);
    if (exc instanceof Malformed) throw new BitstreamError(`${exc.message} at byte ${offset}`, offset);
    throw exc;
  }
}

export function readU16(buf, pos) {
  return buf[pos] | (buf[pos + 1] << 8);
}

export function readU32(buf, pos) {
  return (buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16) | (buf[pos + 3] << 24)) >>> 0;
}

export function readF32(buf, pos) {
  return new DataView(buf.buffer, buf.byteOffset + pos, 4).getFloat32(0, true);
}

// ------------------------------------------------------------------------- cursor

/** Bounds-checked reader over one record whose length is known (errors name the field). */
export class Cursor {
  constructor(data, where) {
    this.data = data;
    this.pos = 0;
    this.where = where;
  }

  tooShort(field) {
    const noun = this.where.endsWith("packet") ? "payload too short" : "too short";
    return new FieldError(this.where, `${noun} for field ${field}`);
  }

  take(n, field) {
    const end = this.pos + n;
    if (end > this.data.length) throw this.tooShort(field);
    const chunk = this.data.subarray(this.pos, end);
    this.pos = end;
    return chunk;
  }

  u8(field) {
    return this.take(1, field)[0];
  }

  u16(field) {
    const c = this.take(2, field);
    return readU16(c, 0);
  }

  u32(field) {
    const c = this.take(4, field);
    return readU32(c, 0);
  }

  f32(field) {
    const c = this.take(4, field);
    return readF32(c, 0);
  }

  varint(field) {
    try {
      const { value, pos } = scanVarint(this.data, this.pos, this.data.length);
      this.pos = pos;
      return value;
    } catch (exc) {
      if (exc instanceof NeedMore) throw this.tooShort(field);
      if (exc instanceof Malformed) throw new FieldError(this.where, `${field}: ${exc.message}`);
      throw exc;
    }
  }

  str8(field) {
    const raw = this.take(this.u8(field), field);
    for (const b of raw) {
      if (b < 0x20 || b > 0x7e) {
        throw new FieldError(this.where, `${field} is not printable ASCII: ${pyBytesRepr(raw)}`);
      }
    }
    return String.fromCharCode(...raw);
  }

  rest() {
    const chunk = this.data.subarray(this.pos);
    this.pos = this.data.length;
    return chunk;
  }

  finish() {
    const left = this.data.length - this.pos;
    if (left) throw new FieldError(this.where, `${left} unexpected trailing byte(s)`);
  }
}

// ------------------------------------------------------------------------- validation

function bound(hi) {
  return hi === VARINT_LIMIT - 1n ? "2**64-1" : String(hi);
}

/** `value` within lo..hi (BigInt-safe), else FieldError like the reference's check_int. */
export function checkInt(where, name, value, lo, hi) {
  const v = toBig(value);
  if (v < toBig(lo) || v > toBig(hi)) {
    throw new FieldError(where, `${name} must be in ${lo}..${bound(toBig(hi))}, got ${v}`);
  }
  return value;
}

/** A float32 field read from the wire must be finite. */
export function checkF32(where, name, value) {
  if (!Number.isFinite(value)) throw new FieldError(where, `${name} must be finite, got ${pyFloatRepr(value)}`);
  return value;
}
