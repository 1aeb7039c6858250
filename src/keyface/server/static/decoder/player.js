// A whole stream in the page: MotionDecoder (motion, references, limits) + the browser's
// picture decoder (keyframes, DETAIL rectangles) + the WebGL2 warp. What keyface.codec.DecoderCore
// does with the warp renderer, for streams whose intra codec the browser decodes (AVIF). Hybrid
// streams' auxiliary pictures (HEVC) are not decoded: their frames are the animation alone.

import { MotionDecoder } from "./decoder.js";
import { blendDetail, decodePicture } from "./picture.js";
import { DETAIL, KEYFRAME, MOTION } from "./packets.js";
import { WarpRenderer } from "./warp.js";

export class StreamPlayer {
  /** `gl`: a WebGL2 context; `models`: MotionModels. */
  constructor(header, models, gl) {
    this.header = header;
    this.motion = new MotionDecoder(header, models);
    this.warp = new WarpRenderer(gl, header.width, header.height, models.manifest.facemesh, models.manifest.field.face_feather);
    this.pending = new Map(); // keyframe pictures (RGBA), DETAIL rectangles blended in
    this.details = new Map(); // predicted frame -> rectangles that promote it
    this.refs = new Map(); // buffer frame index -> {rgba, keypoints}
    this.uploaded = null;
  }

  /** Process one packet; resolves to the frames it completes: [{index, keyframe, rgba}].
   *  `render` false (a live receiver that draws only its newest frame): predicted frames are
   *  decoded (motion, references) but not warped; they come out with `rgba` null and a
   *  `render()` that warps them when called (later, or never); promoted frames are warped. */
  async receive(packet, render = true) {
    const { width, height, intraCodec } = this.header;
    if (packet.type === KEYFRAME) {
      this.motion.receive(packet);
      this.pending.set(Number(packet.frameIndex), await decodePicture(packet.data, intraCodec, width, height));
      return [];
    }
    if (packet.type === DETAIL) {
      this.motion.receive(packet);
      const index = Number(packet.frameIndex);
      const patch = await decodePicture(packet.data, intraCodec, packet.width, packet.height, "DETAIL", "the packet");
      const picture = this.pending.get(index);
      if (picture !== undefined) blendDetail(picture, width, height, patch, packet.width, packet.height, packet.x, packet.y);
      else this.details.set(index, [...(this.details.get(index) || []), { patch, w: packet.width, h: packet.height, x: packet.x, y: packet.y }]);
      return [];
    }
    if (packet.type !== MOTION) {
      this.motion.receive(packet);
      return [];
    }
    const frames = this.motion.receive(packet);
    const out = [];
    for (const f of frames) {
      if (!f.keyframe) continue;
      this.refs.set(f.index, { rgba: this.pending.get(f.index), keypoints: f.keypoints });
      this.pending.delete(f.index);
    }
    for (const f of frames) {
      if (f.keyframe) {
        out.push({ index: f.index, keyframe: true, rgba: this.refs.get(f.index).rgba });
        continue;
      }
      const ref = this.refs.get(f.referenceFrame);
      if (!render && !f.promoted) {
        out.push({ index: f.index, keyframe: false, rgba: null, render: () => this.draw(ref, f) });
        continue;
      }
      if (this.uploaded !== ref) {
        this.warp.setReference(ref.rgba, ref.keypoints);
        this.uploaded = ref;
      }
      this.warp.render(f.keypoints, f.field);
      const rgba = this.warp.readPixels();
      if (f.promoted) {
        for (const d of this.details.get(f.index)) blendDetail(rgba, width, height, d.patch, d.w, d.h, d.x, d.y);
        this.details.delete(f.index);
        this.refs.set(f.index, { rgba, keypoints: f.keypoints });
      }
      out.push({ index: f.index, keyframe: false, rgba });
    }
    const held = new Set(this.motion.buffer);
    // refs no longer held are dropped here; a pending render() keeps its own reference
    for (const k of [...this.refs.keys()]) if (!held.has(k)) this.refs.delete(k);
    return out;
  }

  /** Warp one decoded predicted frame from its reference: RGBA bytes. */
  draw(ref, f) {
    if (this.uploaded !== ref) {
      this.warp.setReference(ref.rgba, ref.keypoints);
      this.uploaded = ref;
    }
    this.warp.render(f.keypoints, f.field);
    return this.warp.readPixels();
  }
}
