// The motion half of the decoder state machine (docs/bitstream.md §9), mirroring
// keyface.codec.DecoderCore without pictures: packets in, per frame the decoded motion symbols,
// the reference it is rendered from, its keypoints and body field out. The same bounds
// (keyface.codec.limits, docs/bitstream.md §9.4) and the same one-line errors; what needs the
// pictures themselves (intra decoding, DETAIL blending, rendering, fusion) is left to the
// renderer that consumes these frames.

import { MotionCodingError, MotionCoderState, decodeFrames } from "./motion.js";
import { AUX, BACKGROUND, DETAIL, END, KEYFRAME, MOTION } from "./packets.js";
import { BitstreamError, toBig } from "./wire.js";

export const MAX_CODED_PIXELS = 1024 * 1024;
export const MAX_SOURCE_PIXELS = 7680 * 4320;
export const MAX_FRAMES_PER_PACKET = 64;
export const MAX_PENDING_KEYFRAMES = MAX_FRAMES_PER_PACKET;
export const MAX_DETAILS_PER_FRAME = 8;
export const MAX_KEYFRAME_LEAD = MAX_FRAMES_PER_PACKET;
export const MAX_BASE_BACK = 32;
export const KEYPOINT_MARGIN = 4.0;
export const MIN_FACE_PX = 1.0;

/** limits.check_header: refuse pictures beyond this decoder's limits. */
export function checkHeader(header) {
  const pixels = header.width * header.height;
  if (pixels > MAX_CODED_PIXELS) {
    throw new BitstreamError(
      `stream exceeds this decoder's limits: ${header.width}x${header.height} pictures (at most ${MAX_CODED_PIXELS} pixels)`,
    );
  }
  if (header.crop !== null && header.hasBackground) {
    const src = header.crop.sourceWidth * header.crop.sourceHeight;
    if (src > MAX_SOURCE_PIXELS) {
      throw new BitstreamError(
        `stream exceeds this decoder's limits: ${header.crop.sourceWidth}x${header.crop.sourceHeight} background (at most ${MAX_SOURCE_PIXELS} pixels)`,
      );
    }
  }
}

/** limits.check_keypoints: finite, near the picture, spanning at least a pixel. */
export function checkKeypoints(kp, width, height, index) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (let i = 0; i < kp.length; i += 2) {
    if (!Number.isFinite(kp[i]) || !Number.isFinite(kp[i + 1])) {
      throw new BitstreamError(`frame ${index}: motion decodes to non-finite keypoints`);
    }
  }
  for (let i = 0; i < kp.length; i += 2) {
    const x = kp[i];
    const y = kp[i + 1];
    if (x < -KEYPOINT_MARGIN * width || y < -KEYPOINT_MARGIN * height || x > (1 + KEYPOINT_MARGIN) * width || y > (1 + KEYPOINT_MARGIN) * height) {
      throw new BitstreamError(`frame ${index}: motion puts the face far outside the picture`);
    }
    minX = Math.min(minX, x);
    maxX = Math.max(maxX, x);
    minY = Math.min(minY, y);
    maxY = Math.max(maxY, y);
  }
  if (Math.min(maxX - minX, maxY - minY) < MIN_FACE_PX) {
    throw new BitstreamError(`frame ${index}: motion shrinks the face below ${MIN_FACE_PX.toFixed(1)} px`);
  }
}

/**
 * Decode the motion of one stream, packet by packet: receive(packet) returns the frames the
 * packet completes, each {index, keyframe, reference (buffer slot or null), referenceFrame,
 * q, params, keypoints (Float32Array, x y per keypoint), field (G*G*2 grid or null),
 * promoted}. `models`: a MotionModels; `keepStates` (live links): hold the coder state after
 * the newest that many frames for continueFrom().
 */
export class MotionDecoder {
  constructor(header, models, keepStates = 0) {
    if (!(keepStates >= 0 && keepStates <= MAX_BASE_BACK)) throw new RangeError(`keepStates must be in 0..${MAX_BASE_BACK}`);
    this.header = header;
    checkHeader(header);
    this.representation = models.forHeader(header);
    const rep = this.representation;
    this.state = new MotionCoderState(rep.steps, rep.mean, rep.spread, rep.deltaSpread);
    this.buffer = []; // frame indices, 0 = newest
    this.keyframes = new Set();
    this.promotions = new Map(); // frame index -> [{width, height}]
    this.nextFrame = 0;
    this.finished = false;
    this.keepStates = keepStates;
    this.states = new Map();
    this.auxNext = 0;
    this.auxFrames = new Set();
    this.auxSeen = false;
    this.live = keepStates > 0;
    this.bidirectional = header.mode === "bidirectional";
    this.hasAuxStream = header.aux !== null && header.aux.codec !== "none";
  }

  push(frameIndex) {
    this.buffer.unshift(frameIndex);
    if (this.buffer.length > this.header.bufferSize) this.buffer.pop();
  }

  resync(frameIndex, clearBuffer = false) {
    this.nextFrame = frameIndex;
    for (const k of [...this.auxFrames]) if (k < frameIndex) this.auxFrames.delete(k);
    for (const k of [...this.keyframes]) if (k < frameIndex) this.keyframes.delete(k);
    for (const k of [...this.promotions.keys()]) if (k < frameIndex) this.promotions.delete(k);
    if (clearBuffer) this.buffer = [];
  }

  holdsState(frameIndex) {
    return this.states.has(frameIndex);
  }

  continueFrom(base, frameIndex) {
    if (!(base < frameIndex && frameIndex <= base + MAX_BASE_BACK)) {
      throw new BitstreamError(`frame ${frameIndex} cannot continue from frame ${base}`);
    }
    const snapshot = this.states.get(base);
    if (snapshot === undefined) throw new BitstreamError(`the motion state after frame ${base} is not held`);
    this.resync(frameIndex);
    this.state.restore(snapshot, frameIndex - base);
  }

  receive(packet) {
    if (this.finished) throw new BitstreamError("packet after the END packet");
    switch (packet.type) {
      case AUX:
        this.auxPacket(packet);
        return [];
      case KEYFRAME: {
        const index = packet.frameIndex;
        if (index < this.nextFrame) throw new BitstreamError(`KEYFRAME for frame ${index} arrives too late`);
        if (this.promotions.has(index)) throw new BitstreamError(`KEYFRAME for frame ${index} after its DETAIL`);
        this.checkFrameIndex(index, "KEYFRAME");
        this.keyframes.add(Number(index)); // the picture itself is the renderer's
        return [];
      }
      case DETAIL:
        this.detail(packet);
        return [];
      case BACKGROUND:
        return [];
      case MOTION:
        return this.motion(packet);
      case END:
        if (toBig(packet.frameCount) !== BigInt(this.nextFrame)) {
          throw new BitstreamError(`END says ${packet.frameCount} frames, ${this.nextFrame} were decoded`);
        }
        this.finished = true;
        return [];
      default:
        return [];
    }
  }

  auxPacket(packet) {
    if (!this.hasAuxStream) throw new BitstreamError("AUX packet in a stream without an auxiliary stream");
    const first = packet.firstFrame;
    if (toBig(first) !== BigInt(this.auxNext)) {
      if (first < this.auxNext || !this.live) throw new BitstreamError(`AUX packet starts at frame ${first}, expected ${this.auxNext}`);
      this.auxSeen = false; // pictures were lost: wait for a random-access one
    }
    const n = packet.pictures.length;
    if (n > MAX_FRAMES_PER_PACKET) {
      throw new BitstreamError(`AUX packet covers ${n} frames (this decoder takes at most ${MAX_FRAMES_PER_PACKET})`);
    }
    const stop = toBig(first) + BigInt(n);
    const count = toBig(this.header.frameCount);
    if (count && stop > count) {
      throw new BitstreamError(`AUX packet covers frames up to ${stop - 1n}: the stream has ${this.header.frameCount} frames`);
    }
    if (first >= this.nextFrame + MAX_KEYFRAME_LEAD || this.auxFrames.size + n > 2 * MAX_FRAMES_PER_PACKET) {
      throw new BitstreamError(`AUX packet for frame ${first} is too far ahead of the motion`);
    }
    packet.pictures.forEach((data, k) => {
      if (data.length) this.auxSeen = true; // decoding the picture is the renderer's
      if (this.auxSeen) this.auxFrames.add(Number(first) + k);
    });
    this.auxNext = Number(stop);
  }

  detail(packet) {
    const index = packet.frameIndex;
    const hasPicture = this.keyframes.has(Number(index));
    const promote = !hasPicture && this.header.promotes && index >= this.nextFrame;
    if (!hasPicture && !promote) throw new BitstreamError(`DETAIL for frame ${index}, which has no pending keyframe`);
    const w = this.header.width;
    const h = this.header.height;
    if (packet.x + packet.width > w || packet.y + packet.height > h) {
      throw new BitstreamError(`DETAIL rectangle ${packet.width}x${packet.height} at (${packet.x}, ${packet.y}) leaves the ${w}x${h} picture`);
    }
    if (promote) this.checkFrameIndex(index, "DETAIL");
    if (hasPicture) return; // blended into the keyframe picture by the renderer
    const key = Number(index);
    const pending = this.promotions.get(key) || [];
    const area = pending.reduce((a, p) => a + p.width * p.height, 0) + packet.width * packet.height;
    if (pending.length >= MAX_DETAILS_PER_FRAME || area > w * h) throw new BitstreamError(`too many DETAIL rectangles for frame ${index}`);
    if (!pending.length && this.keyframes.size + this.promotions.size >= MAX_PENDING_KEYFRAMES) {
      throw new BitstreamError(`DETAIL for frame ${index}: ${MAX_PENDING_KEYFRAMES} pictures already wait`);
    }
    this.promotions.set(key, [...pending, { width: packet.width, height: packet.height }]);
  }

  checkFrameIndex(index, what) {
    const count = toBig(this.header.frameCount);
    if (count && toBig(index) >= count) throw new BitstreamError(`${what} for frame ${index}: the stream has ${this.header.frameCount} frames`);
    if (index >= this.nextFrame + MAX_KEYFRAME_LEAD) {
      throw new BitstreamError(`${what} for frame ${index} is more than ${MAX_KEYFRAME_LEAD} frames ahead of frame ${this.nextFrame}`);
    }
    if (!this.keyframes.has(Number(index)) && this.keyframes.size >= MAX_PENDING_KEYFRAMES) {
      throw new BitstreamError(`${what} for frame ${index}: ${MAX_PENDING_KEYFRAMES} keyframes already wait`);
    }
  }

  motion(packet) {
    if (toBig(packet.firstFrame) !== BigInt(this.nextFrame)) {
      throw new BitstreamError(`MOTION packet starts at frame ${packet.firstFrame}, expected ${this.nextFrame}`);
    }
    if (packet.nFrames > MAX_FRAMES_PER_PACKET) {
      throw new BitstreamError(`MOTION packet covers ${packet.nFrames} frames (this decoder takes at most ${MAX_FRAMES_PER_PACKET})`);
    }
    const first = this.nextFrame;
    const n = packet.nFrames;
    const count = toBig(this.header.frameCount);
    if (count && BigInt(first + n) > count) {
      throw new BitstreamError(`MOTION packet covers frames up to ${first + n - 1}: the stream has ${this.header.frameCount} frames`);
    }
    if (packet.reset) this.state.reset();
    const indices = Array.from({ length: n }, (_, k) => first + k);
    const isKey = indices.map((i) => this.keyframes.has(i));
    let coded;
    try {
      coded = decodeFrames(this.state, packet.data, isKey);
    } catch (exc) {
      if (exc instanceof MotionCodingError) throw new BitstreamError(exc.message);
      throw exc;
    }
    const { width, height } = this.header;
    const rep = this.representation;
    const bidirectional = this.bidirectional;
    const capacity = this.header.bufferSize;
    let held = this.buffer.length;
    if (bidirectional) held = Math.min(held + isKey.filter(Boolean).length, capacity);
    let motion = [];
    indices.forEach((index, k) => {
      const frame = coded[k];
      const params = this.state.dequantize(frame.q);
      const keypoints = rep.keypoints(params, width);
      checkKeypoints(keypoints, width, height, index);
      if (frame.reference === null) {
        if (!bidirectional) held = Math.min(held + 1, capacity);
      } else if (frame.reference >= held) {
        throw new BitstreamError(`frame ${index} names reference ${frame.reference}, buffer holds ${held}`);
      } else if (this.promotions.has(index)) {
        held = Math.min(held + 1, capacity);
      }
      motion.push({ index, frame, params, keypoints });
    });
    const out = [];
    if (bidirectional) {
      const keys = motion.filter((m) => m.frame.reference === null);
      for (const m of keys) {
        this.keyframes.delete(m.index);
        this.push(m.index);
      }
      motion = [...motion.filter((m) => m.frame.reference !== null), ...keys];
    }
    for (const { index, frame, params, keypoints } of motion) {
      const base = { index, q: frame.q, params, keypoints, field: rep.field(params) };
      if (frame.reference === null) {
        if (!bidirectional) {
          this.keyframes.delete(index);
          this.push(index);
        }
        this.auxFrames.delete(index);
        out.push({ ...base, keyframe: true, reference: null, referenceFrame: index, field: null, promoted: false });
        continue;
      }
      const referenceFrame = this.buffer[frame.reference];
      const promoted = this.promotions.has(index);
      if (promoted) {
        this.promotions.delete(index);
        this.push(index);
      }
      this.auxFrames.delete(index);
      out.push({ ...base, keyframe: false, reference: frame.reference, referenceFrame, promoted });
    }
    if (bidirectional) out.sort((a, b) => a.index - b.index);
    this.nextFrame = first + n;
    if (this.keepStates) {
      const last = this.nextFrame - 1;
      this.states.set(last, this.state.snapshot());
      for (const old of [...this.states.keys()]) if (old <= last - this.keepStates) this.states.delete(old);
    }
    return out;
  }
}
