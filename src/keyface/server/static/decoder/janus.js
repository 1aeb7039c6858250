// A keyface receiver behind a stock Janus (docs/janus.md): the page subscribes to one sender's
// data in the Janus VideoRoom of a keyface room and gets its live datagrams; refresh requests go
// back as TextRoom whispers. The same protocol as keyface.server.janus (Python), over Janus's
// HTTP API (POST requests, long-polled events). No janus.js: the API is a few JSON requests.

import { crc32, encodeVarint } from "./wire.js";
import { sha256Hex } from "./sha256.js";
import { DATAGRAM_VERSION, KIND_FEEDBACK } from "./datagram.js";
import { REFRESH_REQUEST } from "./packets.js";

export const VIDEOROOM = "janus.plugin.videoroom";
export const TEXTROOM = "janus.plugin.textroom";

/** The Janus room number of keyface room `name`: the first 48 bits of its SHA-256, as
 *  keyface.server.janus.janus_room_id. */
export function janusRoomId(name) {
  const hex = sha256Hex(new TextEncoder().encode(name));
  return Number.parseInt(hex.slice(0, 12), 16) || 1;
}

/** A FEEDBACK datagram holding REFRESH_REQUEST(frameIndex), byte for byte what
 *  keyface.server.datagram.encode_feedback_datagram writes. */
export function refreshRequestDatagram(frameIndex) {
  const payload = encodeVarint(frameIndex);
  const record = [REFRESH_REQUEST, ...encodeVarint(payload.length), ...payload];
  const crc = crc32(Uint8Array.from(record));
  const crcBytes = [crc & 0xff, (crc >>> 8) & 0xff, (crc >>> 16) & 0xff, crc >>> 24];
  return Uint8Array.from([(DATAGRAM_VERSION << 6) | KIND_FEEDBACK, ...record, ...crcBytes]);
}

const transaction = () => Math.random().toString(36).slice(2, 14);

function toBase64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** One Janus session over the HTTP transport. */
export class JanusSession {
  constructor(url) {
    this.url = url.replace(/\/$/, "");
    this.id = null;
    this.waiting = new Map();
    this.closed = false;
  }

  async post(url, body) {
    const response = await fetch(url, { method: "POST", body: JSON.stringify({ ...body, transaction: body.transaction || transaction() }) });
    const answer = await response.json();
    if (answer.janus === "error") throw new Error(`janus: ${answer.error.reason} (code ${answer.error.code})`);
    return answer;
  }

  async create() {
    this.id = (await this.post(this.url, { janus: "create" })).data.id;
    this.poll();
    return this;
  }

  async poll() {
    while (!this.closed) {
      let events = [];
      try {
        const response = await fetch(`${this.url}/${this.id}?maxev=10&rid=${Date.now()}`);
        events = await response.json();
      } catch (exc) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      for (const event of Array.isArray(events) ? events : [events]) {
        const waiter = this.waiting.get(event.transaction);
        if (waiter && (event.janus === "event" || event.janus === "success" || event.janus === "error")) {
          this.waiting.delete(event.transaction);
          waiter(event);
        }
      }
    }
  }

  async attach(plugin) {
    const answer = await this.post(`${this.url}/${this.id}`, { janus: "attach", plugin });
    return answer.data.id;
  }

  /** A plugin request; resolves to [plugindata.data, jsep]. */
  async message(handle, body, jsep) {
    const t = transaction();
    const event = new Promise((resolve) => this.waiting.set(t, resolve));
    const request = { janus: "message", transaction: t, body };
    if (jsep) request.jsep = jsep;
    let answer = await this.post(`${this.url}/${this.id}/${handle}`, request);
    if (answer.janus === "ack") answer = await event;
    else this.waiting.delete(t);
    if (answer.janus === "error") throw new Error(`janus: ${answer.error.reason}`);
    const data = (answer.plugindata || {}).data || {};
    if (data.error_code) throw new Error(`janus: ${data.error} (code ${data.error_code})`);
    return [data, answer.jsep];
  }

  close() {
    this.closed = true;
    fetch(`${this.url}/${this.id}`, { method: "POST", body: JSON.stringify({ janus: "destroy", transaction: transaction() }) }).catch(() => {});
  }
}

function opened(channel) {
  return new Promise((resolve) => {
    if (channel.readyState === "open") resolve();
    else channel.addEventListener("open", () => resolve(), { once: true });
  });
}

/** Join the TextRoom `number` as `username`; resolves to {whisper(to, bytes), pc}. */
async function joinTextRoom(session, number, username, pin) {
  const handle = await session.attach(TEXTROOM);
  const [, offer] = await session.message(handle, { request: "setup" });
  const pc = new RTCPeerConnection({ iceServers: [] });
  await pc.setRemoteDescription(offer);
  const channel = pc.createDataChannel("keyface-feedback");
  const answers = new Map();
  const onMessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    const resolve = answers.get(msg.transaction);
    if (resolve) {
      answers.delete(msg.transaction);
      resolve(msg);
    }
  };
  channel.addEventListener("message", onMessage);
  pc.addEventListener("datachannel", (event) => event.channel.addEventListener("message", onMessage));
  await pc.setLocalDescription(await pc.createAnswer());
  await session.message(handle, { request: "ack" }, { type: "answer", sdp: pc.localDescription.sdp });
  await opened(channel);
  const t = transaction();
  const joined = new Promise((resolve) => answers.set(t, resolve));
  const join = { textroom: "join", transaction: t, room: number, username, display: username };
  if (pin) join.pin = pin;
  channel.send(JSON.stringify(join));
  const answer = await joined;
  if (answer.textroom === "error") throw new Error(`janus textroom: ${answer.error}`);
  const whisper = (to, bytes) => {
    if (channel.readyState !== "open") return false;
    channel.send(JSON.stringify({ textroom: "message", transaction: transaction(), room: number, to, text: toBase64(bytes), ack: false }));
    return true;
  };
  return { whisper, pc };
}

/** Subscribe to sender `participant` of keyface room `room` through the Janus at `url`.
 *  `onDatagram(Uint8Array)` gets every datagram; resolves to {refresh(frameIndex), close()}. */
export async function subscribe({ url, room, participant, pin = null, username = null, onDatagram, timeoutMs = 15000 }) {
  const number = janusRoomId(room);
  const session = await new JanusSession(url).create();
  const me = username || `page-${transaction()}`;
  const feedback = await joinTextRoom(session, number, me, pin);
  const handle = await session.attach(VIDEOROOM);
  const end = performance.now() + timeoutMs;
  let feed = null;
  while (feed === null) {
    const [data] = await session.message(handle, { request: "listparticipants", room: number });
    const p = (data.participants || []).find((x) => x.display === participant && x.publisher);
    if (p) feed = p.id;
    else if (performance.now() > end) throw new Error(`no publisher ${participant} in the room`);
    else await new Promise((r) => setTimeout(r, 200));
  }
  const join = { request: "join", ptype: "subscriber", room: number, streams: [{ feed }] };
  if (pin) join.pin = pin;
  const [, offer] = await session.message(handle, join);
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addEventListener("datachannel", (event) => {
    event.channel.binaryType = "arraybuffer";
    event.channel.addEventListener("message", (m) => {
      if (m.data instanceof ArrayBuffer) onDatagram(new Uint8Array(m.data));
    });
  });
  await pc.setRemoteDescription(offer);
  // Janus forwards data to a subscriber once it has opened a channel itself ("data ready").
  const ready = pc.createDataChannel("keyface-subscriber");
  await pc.setLocalDescription(await pc.createAnswer());
  await session.message(handle, { request: "start" }, { type: "answer", sdp: pc.localDescription.sdp });
  await opened(ready);
  return {
    username: me,
    refresh: (frameIndex) => feedback.whisper(participant, refreshRequestDatagram(frameIndex)),
    close: () => {
      pc.close();
      feedback.pc.close();
      session.close();
    },
  };
}
