// Test harness for the browser decoder (src/keyface/server/static/decoder): reads a JSON job
// {"models_dir": path, "tasks": [...]} on stdin, runs every task through the JS modules and
// writes {"results": [...], "timing": {...}} on stdout, in the canonical form
// tests/test_js_decoder.py builds from the Python reference (snake_case keys, bytes as hex,
// integers above 2**53 as decimal strings, errors as {"error", "offset"}).
//
//   node tests/js/decoder_harness.mjs < job.json

import fs from "node:fs";
import path from "node:path";
import { parseDatagram } from "../../src/keyface/server/static/decoder/datagram.js";
import { MotionDecoder } from "../../src/keyface/server/static/decoder/decoder.js";
import { parseHeader } from "../../src/keyface/server/static/decoder/header.js";
import { MotionModels } from "../../src/keyface/server/static/decoder/model.js";
import { MotionCoderState, decodeFrames } from "../../src/keyface/server/static/decoder/motion.js";
import { parsePacket } from "../../src/keyface/server/static/decoder/packets.js";
import { checkPicture } from "../../src/keyface/server/static/decoder/picture.js";
import { StreamReader, readStream } from "../../src/keyface/server/static/decoder/stream.js";

const SKIP = new Set(["name"]);

function snake(key) {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function canon(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  if (Array.isArray(value)) return value.map(canon);
  if (ArrayBuffer.isView(value)) return Array.from(value);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) if (!SKIP.has(k)) out[snake(k)] = canon(v);
    return out;
  }
  return value;
}

function error(exc) {
  if (!(exc instanceof Error) || !["BitstreamError", "FieldError", "DatagramError", "MotionCodingError"].includes(exc.name)) {
    return { error: `UNEXPECTED ${exc && exc.name}: ${exc && exc.message}`, offset: null, unexpected: true };
  }
  return { error: exc.message, offset: exc.offset === undefined ? null : exc.offset };
}

function bytes(hex) {
  return new Uint8Array(Buffer.from(hex, "hex"));
}

function datagramCanon(d) {
  const full = {
    kind: d.kind,
    idr: false,
    frameIndex: 0,
    keyBack: 0,
    header: null,
    keyframe: null,
    motion: null,
    refresh: null,
    baseBack: null,
    keys: null,
    copies: [],
    ack: null,
    aux: null,
    auxRefresh: null,
    ...d,
  };
  full.copies = full.copies.map(datagramCanon);
  return canon(full);
}

function frameCanon(f) {
  return {
    index: f.index,
    keyframe: f.keyframe,
    reference: f.reference,
    reference_frame: f.referenceFrame,
    q: f.q,
    keypoints: Array.from(f.keypoints),
    field: f.field === null ? null : Array.from(f.field),
  };
}

function decodeStream(models, data) {
  let parsed;
  try {
    parsed = readStream(data);
  } catch (exc) {
    return { frames: [], error: error(exc).error };
  }
  const frames = [];
  try {
    const decoder = new MotionDecoder(parsed.header, models);
    for (const packet of parsed.packets) for (const f of decoder.receive(packet)) frames.push(frameCanon(f));
  } catch (exc) {
    return { frames, error: error(exc).error };
  }
  return { frames, error: parsed.error ? parsed.error.message : null };
}

/** A lossless, in-order live sequence: as keyface.server.receiver does when nothing is lost. */
function decodeLive(models, datagrams) {
  const frames = [];
  let decoder = null;
  try {
    for (const [channel, hex] of datagrams) {
      if (channel !== "reliable" && channel !== "unreliable") throw new Error("bad channel");
      const d = parseDatagram(bytes(hex));
      if (d.kind === 1) {
        if (decoder === null) decoder = new MotionDecoder(d.header, models, 32);
        continue;
      }
      if (d.kind !== 2) continue;
      if (d.idr) decoder.resync(d.frameIndex, true);
      else if (d.baseBack !== null && d.baseBack !== 0) decoder.continueFrom(d.frameIndex - d.baseBack, d.frameIndex);
      if (d.keyframe) decoder.receive(d.keyframe);
      if (d.aux) decoder.receive(d.aux);
      for (const f of decoder.receive(d.motion)) frames.push(frameCanon(f));
    }
  } catch (exc) {
    return { frames, error: error(exc).error };
  }
  return { frames, error: null };
}

/** Best of `repeat` timed decodes of a valid stream: the motion symbols alone (range decoding
 * and the coder state), and the whole MotionDecoder (symbols, keypoints, field, checks). */
function bench(models, data, repeat) {
  const parsed = readStream(data);
  const header = parsed.header;
  let symbolsMs = Infinity;
  let decodeMs = Infinity;
  let frames = 0;
  for (let r = 0; r < repeat; r++) {
    const rep = models.forHeader(header);
    const state = new MotionCoderState(rep.steps, rep.mean, rep.spread, rep.deltaSpread);
    const keys = new Set();
    let t = performance.now();
    for (const p of parsed.packets) {
      if (p.type === 1) keys.add(p.frameIndex);
      if (p.type !== 2) continue;
      if (p.reset) state.reset();
      const isKey = Array.from({ length: p.nFrames }, (_, k) => keys.has(p.firstFrame + k));
      decodeFrames(state, p.data, isKey);
    }
    symbolsMs = Math.min(symbolsMs, performance.now() - t);
    const decoder = new MotionDecoder(header, models);
    t = performance.now();
    frames = 0;
    for (const p of parsed.packets) frames += decoder.receive(p).length;
    decodeMs = Math.min(decodeMs, performance.now() - t);
  }
  return { frames, symbols_ms: symbolsMs, decode_ms: decodeMs };
}

function run(task, models) {
  const data = task.data === undefined ? null : bytes(task.data);
  switch (task.op) {
    case "stream": {
      try {
        const s = readStream(data);
        return { header: canon(s.header), packets: s.packets.map(canon), error: s.error && error(s.error), valid_bytes: s.validBytes, complete: s.complete };
      } catch (exc) {
        return error(exc);
      }
    }
    case "reader": {
      // feed in the given chunk sizes, pull events after each, then close
      const reader = new StreamReader();
      const events = [];
      let pos = 0;
      try {
        for (const size of [...task.chunks, data.length]) {
          reader.feed(data.subarray(pos, Math.min(data.length, pos + size)));
          pos = Math.min(data.length, pos + size);
          for (let ev = reader.nextEvent(); ev !== null; ev = reader.nextEvent()) {
            events.push(ev.kind === "header" ? { header: canon(ev.header) } : canon(ev.packet));
          }
          if (pos >= data.length) break;
        }
        reader.close();
        return { events, error: null };
      } catch (exc) {
        return { events, error: error(exc) };
      }
    }
    case "header": {
      try {
        const { header, size } = parseHeader(data);
        return { header: canon(header), size };
      } catch (exc) {
        return error(exc);
      }
    }
    case "packet": {
      try {
        const { packet, next } = parsePacket(data, task.offset);
        return { packet: canon(packet), next };
      } catch (exc) {
        return error(exc);
      }
    }
    case "datagram": {
      try {
        return datagramCanon(parseDatagram(data));
      } catch (exc) {
        return error(exc);
      }
    }
    case "decode":
      return decodeStream(models, data);
    case "live":
      return decodeLive(models, task.datagrams);
    case "picture": {
      try {
        checkPicture(data, task.codec, task.width, task.height);
        return null;
      } catch (exc) {
        return error(exc);
      }
    }
    case "bench":
      return bench(models, data, task.repeat);
    default:
      throw new Error(`unknown op ${task.op}`);
  }
}

const job = JSON.parse(fs.readFileSync(0, "utf8"));
const dir = job.models_dir;
const manifest = JSON.parse(fs.readFileSync(path.join(dir, "models.json"), "utf8"));
const binaries = {};
for (const spec of Object.values(manifest.models)) binaries[spec.file] = new Uint8Array(fs.readFileSync(path.join(dir, spec.file)));
const t0 = performance.now();
const models = new MotionModels(manifest, binaries);
const loadMs = performance.now() - t0;
const results = [];
const t1 = performance.now();
for (const task of job.tasks) results.push(run(task, models));
const taskMs = performance.now() - t1;
process.stdout.write(JSON.stringify({ results, timing: { model_load_ms: loadMs, tasks_ms: taskMs } }));
