// The training-free renderer in WebGL2 (keyface.render.warp, keyface.motion.field): a
// piecewise-affine backward warp of the reference picture over a Delaunay triangulation of
// the driving control points (keypoints, two head rings that move by a share of the head's
// similarity motion, the crop border), blended outside the face oval with the smooth
// head-follow flow (keyface.render.warp.head_follow_flow), plus the body-motion field weighted
// away from the face, sampled bicubically (OpenCV's INTER_CUBIC, A = -0.75, positions on its
// 1/32-pixel grid, edges repeated).
//
// The geometry (control points, the opened-mouth topology, the triangulation, the head-follow
// flow on its 4x coarser grid, the body weight) is computed on the CPU in doubles as in
// Python; the GPU draws each triangle with the reference position as a varying, so the affine
// map of every pixel is exact (Python evaluates it on a half-resolution grid and upsamples
// bilinearly: the two differ near triangle edges), and upsamples the head-follow flow and its
// blend as cv2.resize(INTER_LINEAR) does.

const HEAD_REACH = 0.25;
const NECK_FOLLOW = 0.35;
const NECK_RAMP = 0.15;
const BLEND_REACH = 0.3;
const BORDER_POINTS = 9;
const BORDER_CALM = 0.12;
const FOLD_GUARD = 1.7;
const RINGS = [1.3, 1.75];
const FOLLOW_GRID = 4;
const MOUTH_TOPOLOGY_GAP = 0.15;

const clip01 = (v) => Math.min(Math.max(v, 0), 1);

/** The share of the head's motion a point outside the face follows
 * (keyface.render.warp.follow_share): a Gaussian of its `distance` from the face oval, lowered
 * below the chin and at the crop border, both widths at least FOLD_GUARD x `motion`. */
export function followShare(distance, y, margin, radius, chinY, side, motion) {
  const reach = Math.max(HEAD_REACH * radius, FOLD_GUARD * motion, 1e-6);
  const ramp = Math.max(NECK_RAMP * radius, FOLD_GUARD * motion, 1e-6);
  const r = distance / reach;
  let share = Math.exp(-0.5 * (r * r));
  const neck = clip01((y - chinY) / ramp);
  share *= 1.0 - (1.0 - NECK_FOLLOW) * neck;
  return share * clip01(margin / (BORDER_CALM * side));
}

function ovalPoints(kp, faceOval) {
  const out = new Float64Array(2 * faceOval.length);
  faceOval.forEach((k, i) => {
    out[2 * i] = kp[2 * k];
    out[2 * i + 1] = kp[2 * k + 1];
  });
  return out;
}

/** {radius, chin, motion, cx, cy} of an oval (flat x y) moved by `sim`: its mean distance
 * from its centre, its lowest y, the largest displacement of its points under `sim`. */
function ovalShape(oval, sim) {
  const m = oval.length / 2;
  let cx = 0;
  let cy = 0;
  let chin = -Infinity;
  for (let i = 0; i < m; i++) {
    cx += oval[2 * i];
    cy += oval[2 * i + 1];
    chin = Math.max(chin, oval[2 * i + 1]);
  }
  cx /= m;
  cy /= m;
  let radius = 0;
  let motion = 0;
  for (let i = 0; i < m; i++) {
    const x = oval[2 * i];
    const y = oval[2 * i + 1];
    radius += Math.sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy));
    const dx = sim[0] * x + sim[1] * y + sim[2] - x;
    const dy = sim[3] * x + sim[4] * y + sim[5] - y;
    motion = Math.max(motion, Math.sqrt(dx * dx + dy * dy));
  }
  return { radius: radius / m, chin, motion, cx, cy };
}

/** 2x3 similarity [a, -b, tx; b, a, ty] minimising |dst - M [src, 1]|^2 (flat x y arrays). */
export function similarityFit(src, dst) {
  const n = src.length / 2;
  let msx = 0;
  let msy = 0;
  let mdx = 0;
  let mdy = 0;
  for (let i = 0; i < n; i++) {
    msx += src[2 * i];
    msy += src[2 * i + 1];
    mdx += dst[2 * i];
    mdy += dst[2 * i + 1];
  }
  msx /= n;
  msy /= n;
  mdx /= n;
  mdy /= n;
  let v = 0;
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[2 * i] - msx;
    const sy = src[2 * i + 1] - msy;
    const dx = dst[2 * i] - mdx;
    const dy = dst[2 * i + 1] - mdy;
    v += sx * sx + sy * sy;
    sa += sx * dx + sy * dy;
    sb += sx * dy - sy * dx;
  }
  if (!(v > 1e-12)) return [1, 0, mdx - msx, 0, 1, mdy - msy];
  const a = sa / v;
  const b = sb / v;
  return [a, -b, mdx - (a * msx - b * msy), b, a, mdy - (b * msx + a * msy)];
}

function linspace(a, b, n) {
  const step = (b - a) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? b : a + i * step));
}

/** Matching control points {ref, drv} (flat x y Float64Arrays): keypoints, rings, border. */
export function controlPoints(refKp, drvKp, width, height, faceOval) {
  const m = faceOval.length;
  const ovalRef = ovalPoints(refKp, faceOval);
  const ovalDrv = ovalPoints(drvKp, faceOval);
  const sim = similarityFit(ovalRef, ovalDrv);
  const { radius, chin, motion, cx, cy } = ovalShape(ovalRef, sim);
  const side = Math.min(width, height);
  const ref = Array.from(refKp);
  const drv = Array.from(drvKp);
  for (const factor of RINGS) {
    for (let i = 0; i < m; i++) {
      const ox = ovalRef[2 * i] - cx;
      const oy = ovalRef[2 * i + 1] - cy;
      const px = cx + factor * ox;
      const py = cy + factor * oy;
      const margin = Math.min(px, width - 1 - px, py, height - 1 - py);
      if (!(margin > 2.0)) continue;
      const mx = sim[0] * px + sim[1] * py + sim[2];
      const my = sim[3] * px + sim[4] * py + sim[5];
      const spoke = Math.sqrt(ox * ox + oy * oy);
      const share = followShare((factor - 1.0) * spoke, py, margin, radius, chin, side, motion);
      ref.push(px, py);
      drv.push(px + share * (mx - px), py + share * (my - py));
    }
  }
  const xs = linspace(-0.5, width - 0.5, BORDER_POINTS);
  const ys = linspace(-0.5, height - 0.5, BORDER_POINTS);
  const border = [];
  for (const x of xs) border.push(x, -0.5);
  for (const x of xs) border.push(x, height - 0.5);
  for (const y of ys.slice(1, -1)) border.push(-0.5, y);
  for (const y of ys.slice(1, -1)) border.push(width - 0.5, y);
  ref.push(...border);
  drv.push(...border);
  return { ref: Float64Array.from(ref), drv: Float64Array.from(drv) };
}

/** The smooth flow around the head (keyface.render.warp.head_follow_flow) on its
 * FOLLOW_GRID-times coarser grid: {width, height, grid, data} with data RGBA float32 per cell,
 * (x shift, y shift, blend, 0); the shader upsamples it as cv2.resize(INTER_LINEAR) and blends
 * the mesh's reference position towards (pixel + shift) by the blend. The oval's cells are
 * those whose centre lies inside it (even-odd, as keyface.render.warp.inside_oval), their
 * distance the exact Euclidean one (as cv2.DIST_MASK_PRECISE): from the nearest oval cell,
 * which is one on its boundary. */
export function headFollow(refKp, drvKp, width, height, faceOval) {
  const m = faceOval.length;
  const ovalRef = ovalPoints(refKp, faceOval);
  const ovalDrv = ovalPoints(drvKp, faceOval);
  const sim = similarityFit(ovalDrv, ovalRef); // driving -> reference
  const { radius, chin, motion } = ovalShape(ovalDrv, sim);
  const q = FOLLOW_GRID;
  const qw = Math.floor((width + q - 1) / q);
  const qh = Math.floor((height + q - 1) / q);
  const centre = (i) => i * q + (q - 1) / 2;
  const inside = new Uint8Array(qw * qh);
  for (let r = 0; r < qh; r++) {
    const y = centre(r);
    const cross = [];
    for (let i = 0; i < m; i++) {
      const j = (i + 1) % m;
      const ax = ovalDrv[2 * i];
      const ay = ovalDrv[2 * i + 1];
      const bx = ovalDrv[2 * j];
      const by = ovalDrv[2 * j + 1];
      if ((ay > y) !== (by > y)) cross.push(ax + ((y - ay) * (bx - ax)) / (by - ay));
    }
    for (let c = 0; c < qw; c++) {
      const x = centre(c);
      let n = 0;
      for (const xc of cross) if (xc > x) n++;
      inside[r * qw + c] = n & 1;
    }
  }
  const edge = [];
  for (let r = 0; r < qh; r++) {
    for (let c = 0; c < qw; c++) {
      if (!inside[r * qw + c]) continue;
      if ((c > 0 && !inside[r * qw + c - 1]) || (c + 1 < qw && !inside[r * qw + c + 1])
        || (r > 0 && !inside[(r - 1) * qw + c]) || (r + 1 < qh && !inside[(r + 1) * qw + c])) edge.push(c, r);
    }
  }
  const side = Math.min(width, height);
  const blendReach = Math.max(BLEND_REACH * radius, 1e-6);
  const data = new Float32Array(qw * qh * 4);
  for (let r = 0; r < qh; r++) {
    for (let c = 0; c < qw; c++) {
      let distance = 0;
      if (!inside[r * qw + c]) {
        let best = Infinity;
        for (let e = 0; e < edge.length; e += 2) {
          const dc = edge[e] - c;
          const dr = edge[e + 1] - r;
          best = Math.min(best, dc * dc + dr * dr);
        }
        distance = Math.fround(Math.sqrt(best)) * q;
      }
      const x = centre(c);
      const y = centre(r);
      const margin = Math.min(x, width - 1 - x, y, height - 1 - y);
      const share = followShare(distance, y, margin, radius, chin, side, motion);
      const tx = sim[0] * x + sim[1] * y + sim[2];
      const ty = sim[3] * x + sim[4] * y + sim[5];
      const t = clip01((distance - q) / blendReach);
      const k = 4 * (r * qw + c);
      data[k] = share * (tx - x);
      data[k + 1] = share * (ty - y);
      data[k + 2] = t * t * (3.0 - 2.0 * t);
    }
  }
  return { width: qw, height: qh, grid: q, data };
}

/** The control points with the inner lips of a closed or nearly closed mouth moved apart
 * (keyface.render.warp.mouth_topology): what is triangulated. */
export function mouthTopology(points, mesh) {
  if (points.length / 2 < mesh.num_points) return points;
  const [k0, k1] = mesh.inner_mouth_corners;
  const c0x = points[2 * k0];
  const c0y = points[2 * k0 + 1];
  const ax = points[2 * k1] - c0x;
  const ay = points[2 * k1 + 1] - c0y;
  const width = Math.hypot(ax, ay);
  if (width < 1e-6) return points;
  let nx = -ay / width;
  let ny = ax / width;
  const [u0, l0] = mesh.outer_lip_middle;
  if ((points[2 * l0] - points[2 * u0]) * nx + (points[2 * l0 + 1] - points[2 * u0 + 1]) * ny < 0) {
    nx = -nx;
    ny = -ny;
  }
  const out = Float64Array.from(points);
  let moved = false;
  for (const [u, l] of mesh.inner_lips) {
    const gap = (points[2 * l] - points[2 * u]) * nx + (points[2 * l + 1] - points[2 * u + 1]) * ny;
    const mx = (points[2 * u] + points[2 * l]) / 2 - c0x;
    const my = (points[2 * u + 1] + points[2 * l + 1]) / 2 - c0y;
    const along = (mx * ax + my * ay) / (width * width);
    const target = MOUTH_TOPOLOGY_GAP * width * Math.min(Math.max(4 * along * (1 - along), 0), 1);
    const shift = Math.max(target - gap, 0) / 2;
    if (shift === 0) continue;
    moved = true;
    out[2 * u] -= shift * nx;
    out[2 * u + 1] -= shift * ny;
    out[2 * l] += shift * nx;
    out[2 * l + 1] += shift * ny;
  }
  return moved ? out : points;
}

/** Delaunay triangulation (Bowyer-Watson) of flat x y points: Int32Array of index triples.
 * A point equal to an earlier one is left out (as qhull leaves out coincident points). */
export function delaunay(points) {
  const n = points.length / 2;
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (let i = 0; i < n; i++) {
    minX = Math.min(minX, points[2 * i]);
    maxX = Math.max(maxX, points[2 * i]);
    minY = Math.min(minY, points[2 * i + 1]);
    maxY = Math.max(maxY, points[2 * i + 1]);
  }
  const span = Math.max(maxX - minX, maxY - minY, 1);
  const midX = (minX + maxX) / 2;
  const midY = (minY + maxY) / 2;
  const xs = Array.from({ length: n }, (_, i) => points[2 * i]);
  const ys = Array.from({ length: n }, (_, i) => points[2 * i + 1]);
  xs.push(midX - 20 * span, midX, midX + 20 * span);
  ys.push(midY - 20 * span, midY + 20 * span, midY - 20 * span);
  let tris = [];
  const make = (a, b, c) => {
    const ax = xs[a];
    const ay = ys[a];
    const bx = xs[b] - ax;
    const by = ys[b] - ay;
    const cx = xs[c] - ax;
    const cy = ys[c] - ay;
    const d = 2 * (bx * cy - by * cx);
    const b2 = bx * bx + by * by;
    const c2 = cx * cx + cy * cy;
    const ux = (cy * b2 - by * c2) / d;
    const uy = (bx * c2 - cx * b2) / d;
    return { a, b, c, x: ax + ux, y: ay + uy, r2: ux * ux + uy * uy };
  };
  tris.push(make(n, n + 1, n + 2));
  for (let p = 0; p < n; p++) {
    const px = xs[p];
    const py = ys[p];
    const bad = [];
    const keep = [];
    for (const t of tris) {
      const dx = px - t.x;
      const dy = py - t.y;
      if (dx * dx + dy * dy < t.r2 * (1 - 1e-12)) bad.push(t);
      else keep.push(t);
    }
    if (!bad.length) continue;
    let duplicate = false;
    const edges = new Map();
    for (const t of bad) {
      for (const [u, v] of [
        [t.a, t.b],
        [t.b, t.c],
        [t.c, t.a],
      ]) {
        if (xs[u] === px && ys[u] === py) duplicate = true;
        const key = u < v ? `${u},${v}` : `${v},${u}`;
        if (edges.has(key)) edges.set(key, null);
        else edges.set(key, [u, v]);
      }
    }
    if (duplicate) continue;
    for (const e of edges.values()) if (e !== null) keep.push(make(e[0], e[1], p));
    tris = keep;
  }
  const out = [];
  for (const t of tris) if (t.a < n && t.b < n && t.c < n) out.push(t.a, t.b, t.c);
  return Int32Array.from(out);
}

function doubledArea(p, a, b, c) {
  const ax = p[2 * b] - p[2 * a];
  const ay = p[2 * b + 1] - p[2 * a + 1];
  const bx = p[2 * c] - p[2 * a];
  const by = p[2 * c + 1] - p[2 * a + 1];
  return ax * by - ay * bx;
}

/** OpenCV's Gaussian kernel of size `k` and `sigma` (getGaussianKernel, doubles). */
function gaussianKernel(k, sigma) {
  const out = new Float64Array(k);
  let sum = 0;
  for (let i = 0; i < k; i++) {
    const x = i - (k - 1) / 2;
    out[i] = Math.exp(-(x * x) / (2 * sigma * sigma));
    sum += out[i];
  }
  for (let i = 0; i < k; i++) out[i] /= sum;
  return out;
}

function reflect101(i, n) {
  if (n === 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
}

/** The face mask of keyface.motion.field.body_weight before its upsampling: the oval filled
 * on a quarter-resolution raster (pixel centres inside the polygon of rounded vertices),
 * blurred with OpenCV's Gaussian; {width, height, data} (the shader takes 1 - its bilinear
 * upsampling). */
export function faceMask(keypoints, width, height, faceOval, feather) {
  const qw = Math.max(Math.floor(width / 4), 1);
  const qh = Math.max(Math.floor(height / 4), 1);
  const sx = qw / width;
  const sy = qh / height;
  const poly = faceOval.map((k) => [Math.round(keypoints[2 * k] * sx), Math.round(keypoints[2 * k + 1] * sy)]);
  const mask = new Float64Array(qw * qh);
  for (let y = 0; y < qh; y++) {
    // scanline fill, even-odd over the edges, pixel centres at integers (edges included)
    const hits = [];
    for (let i = 0; i < poly.length; i++) {
      const [x0, y0] = poly[i];
      const [x1, y1] = poly[(i + 1) % poly.length];
      if (y0 === y1) continue;
      if ((y >= Math.min(y0, y1)) && (y < Math.max(y0, y1))) hits.push(x0 + ((y - y0) * (x1 - x0)) / (y1 - y0));
    }
    hits.sort((a, b) => a - b);
    for (let h = 0; h + 1 < hits.length; h += 2) {
      const from = Math.max(0, Math.ceil(hits[h] - 1e-9));
      const to = Math.min(qw - 1, Math.floor(hits[h + 1] + 1e-9));
      for (let x = from; x <= to; x++) mask[y * qw + x] = 1;
    }
  }
  for (const [x, y] of poly) if (x >= 0 && x < qw && y >= 0 && y < qh) mask[y * qw + x] = 1;
  const sigma = feather * Math.max(qw, qh);
  const k = (Math.round(sigma * 4 * 2 + 1) | 1);
  const kern = gaussianKernel(k, sigma);
  const r = (k - 1) / 2;
  const tmp = new Float64Array(qw * qh);
  for (let y = 0; y < qh; y++) {
    for (let x = 0; x < qw; x++) {
      let acc = 0;
      for (let i = 0; i < k; i++) acc += kern[i] * mask[y * qw + reflect101(x + i - r, qw)];
      tmp[y * qw + x] = acc;
    }
  }
  const out = new Float32Array(qw * qh);
  for (let y = 0; y < qh; y++) {
    for (let x = 0; x < qw; x++) {
      let acc = 0;
      for (let i = 0; i < k; i++) acc += kern[i] * tmp[reflect101(y + i - r, qh) * qw + x];
      out[y * qw + x] = acc;
    }
  }
  return { width: qw, height: qh, data: out };
}

const VERTEX = `#version 300 es
in vec2 aPos;
in vec2 aRef;
uniform vec2 uSize;
out vec2 vRef;
void main() {
  vRef = aRef;
  gl_Position = vec4((aPos + 0.5) / uSize * 2.0 - 1.0, 0.0, 1.0);
}`;

const FRAGMENT = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
in vec2 vRef;
uniform sampler2D uImage;
uniform sampler2D uField;
uniform sampler2D uMask;
uniform sampler2D uFollow;
uniform ivec2 uFollowSize;
uniform float uFollowGrid;
uniform bool uHasField;
uniform vec2 uSize;
uniform ivec2 uMaskSize;
uniform int uGrid;
out vec4 outColor;

// Bilinear lookup of a small raster at source position f (texel centres at integers), edges
// clamped as cv2.resize(INTER_LINEAR) does.
vec4 bilinearAt(sampler2D tex, ivec2 size, vec2 f) {
  vec2 s = floor(f);
  f -= s;
  ivec2 i = ivec2(s);
  if (i.x < 0) { i.x = 0; f.x = 0.0; }
  if (i.y < 0) { i.y = 0; f.y = 0.0; }
  if (i.x >= size.x - 1) { i.x = size.x - 1; f.x = 0.0; }
  if (i.y >= size.y - 1) { i.y = size.y - 1; f.y = 0.0; }
  ivec2 j = min(i + 1, size - 1);
  vec4 a = texelFetch(tex, i, 0) * (1.0 - f.x) + texelFetch(tex, ivec2(j.x, i.y), 0) * f.x;
  vec4 b = texelFetch(tex, ivec2(i.x, j.y), 0) * (1.0 - f.x) + texelFetch(tex, j, 0) * f.x;
  return a * (1.0 - f.y) + b * f.y;
}

// cv2.resize(INTER_LINEAR) of a small raster to uSize, at output pixel p (float rasters).
vec4 resizeLinear(sampler2D tex, ivec2 size, vec2 p) {
  return bilinearAt(tex, size, (p + 0.5) * vec2(size) / uSize - 0.5);
}

// The same at an integer upscale grid (cv2.resize to size * grid, cropped).
vec4 resizeGrid(sampler2D tex, ivec2 size, float grid, vec2 p) {
  return bilinearAt(tex, size, (p + 0.5) / grid - 0.5);
}

vec4 cubicWeights(float x) {
  const float A = -0.75;
  float w0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
  float w1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
  float w2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
  return vec4(w0, w1, w2, 1.0 - w0 - w1 - w2);
}

void main() {
  vec2 p = gl_FragCoord.xy - 0.5;
  vec2 src = vRef;
  // outside the face oval the mesh gives way to the smooth head-follow flow
  vec4 follow = resizeGrid(uFollow, uFollowSize, uFollowGrid, p);
  src += follow.z * ((p + follow.xy) - src);
  if (uHasField) {
    vec2 field = resizeLinear(uField, ivec2(uGrid), p).xy * uSize / 256.0;
    float weight = 1.0 - resizeLinear(uMask, uMaskSize, p).x;
    src += field * weight;
  }
  // cv2.remap: positions rounded to 1/32 pixel, bicubic (A = -0.75), edges repeated
  vec2 q = floor(src * 32.0 + 0.5);
  vec2 base = floor(q / 32.0);
  vec2 frac = (q - base * 32.0) / 32.0;
  vec4 wx = cubicWeights(frac.x);
  vec4 wy = cubicWeights(frac.y);
  ivec2 size = textureSize(uImage, 0);
  vec3 acc = vec3(0.0);
  for (int j = 0; j < 4; j++) {
    int y = clamp(int(base.y) + j - 1, 0, size.y - 1);
    vec3 row = vec3(0.0);
    for (int i = 0; i < 4; i++) {
      int x = clamp(int(base.x) + i - 1, 0, size.x - 1);
      row += wx[i] * texelFetch(uImage, ivec2(x, y), 0).rgb;
    }
    acc += wy[j] * row;
  }
  outColor = vec4(clamp(floor(acc * 255.0 + 0.5), 0.0, 255.0) / 255.0, 1.0);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

/**
 * The warp renderer on a WebGL2 context of `width` x `height`: setReference(rgba, keypoints)
 * once per reference, render(keypoints, field) per frame (into the drawing buffer, or
 * readPixels() for the RGBA bytes, row 0 on top). `facemesh`, `feather`: from models.json.
 */
export class WarpRenderer {
  constructor(gl, width, height, facemesh, feather) {
    this.gl = gl;
    this.width = width;
    this.height = height;
    this.mesh = facemesh;
    this.feather = feather;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    this.program = program;
    this.buffer = gl.createBuffer();
    this.image = this.texture();
    this.field = this.texture();
    this.mask = this.texture();
    this.follow = this.texture();
    this.fbo = gl.createFramebuffer();
    this.target = this.texture();
    gl.bindTexture(gl.TEXTURE_2D, this.target);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, width, height, 0, gl.RGBA, gl.UNSIGNED_BYTE, null);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.fbo);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, this.target, 0);
  }

  texture() {
    const gl = this.gl;
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    return t;
  }

  /** The reference picture (RGBA bytes, row 0 on top) and its keypoints. */
  setReference(rgba, keypoints) {
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, this.image);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, this.width, this.height, 0, gl.RGBA, gl.UNSIGNED_BYTE, rgba);
    this.refKeypoints = Float64Array.from(keypoints);
  }

  /** The triangles to draw: [{pos, ref}] passes (a fallback under the gaps, then the map). */
  geometry(keypoints) {
    const { ref, drv } = controlPoints(this.refKeypoints, Float64Array.from(keypoints), this.width, this.height, this.mesh.face_oval);
    const topo = mouthTopology(drv, this.mesh);
    const tris = delaunay(topo);
    const under = [];
    const over = [];
    for (let t = 0; t < tris.length; t += 3) {
      const [a, b, c] = [tris[t], tris[t + 1], tris[t + 2]];
      const area = doubledArea(drv, a, b, c);
      const usable = Math.abs(area) > 1e-9 && (topo === drv || Math.sign(area) === Math.sign(doubledArea(topo, a, b, c)));
      for (const v of [a, b, c]) {
        under.push(topo[2 * v], topo[2 * v + 1], ref[2 * v], ref[2 * v + 1]);
        if (usable) over.push(drv[2 * v], drv[2 * v + 1], ref[2 * v], ref[2 * v + 1]);
      }
    }
    return [Float32Array.from(under), Float32Array.from(over)];
  }

  /** Draw the frame with driving `keypoints` and body `field` (or null); `cpuMs` is then the
   * time its geometry took on the CPU (the GPU work is asynchronous until readPixels). */
  render(keypoints, field = null) {
    const gl = this.gl;
    const t0 = performance.now();
    const passes = this.geometry(keypoints);
    const follow = headFollow(this.refKeypoints, Float64Array.from(keypoints), this.width, this.height, this.mesh.face_oval);
    const mask = field !== null ? faceMask(keypoints, this.width, this.height, this.mesh.face_oval, this.feather) : null;
    this.cpuMs = performance.now() - t0;
    gl.useProgram(this.program);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.fbo);
    gl.viewport(0, 0, this.width, this.height);
    const u = (name) => gl.getUniformLocation(this.program, name);
    gl.uniform2f(u("uSize"), this.width, this.height);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.image);
    gl.uniform1i(u("uImage"), 0);
    gl.activeTexture(gl.TEXTURE3);
    gl.bindTexture(gl.TEXTURE_2D, this.follow);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, follow.width, follow.height, 0, gl.RGBA, gl.FLOAT, follow.data);
    gl.uniform1i(u("uFollow"), 3);
    gl.uniform2i(u("uFollowSize"), follow.width, follow.height);
    gl.uniform1f(u("uFollowGrid"), follow.grid);
    gl.uniform1i(u("uHasField"), field !== null ? 1 : 0);
    if (field !== null) {
      const g = Math.round(Math.sqrt(field.length / 2));
      const rgba = new Float32Array(g * g * 4);
      for (let i = 0; i < g * g; i++) {
        rgba[4 * i] = field[2 * i];
        rgba[4 * i + 1] = field[2 * i + 1];
      }
      gl.activeTexture(gl.TEXTURE1);
      gl.bindTexture(gl.TEXTURE_2D, this.field);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, g, g, 0, gl.RGBA, gl.FLOAT, rgba);
      gl.uniform1i(u("uField"), 1);
      gl.uniform1i(u("uGrid"), g);
      const data = new Float32Array(mask.width * mask.height * 4);
      for (let i = 0; i < mask.data.length; i++) data[4 * i] = mask.data[i];
      gl.activeTexture(gl.TEXTURE2);
      gl.bindTexture(gl.TEXTURE_2D, this.mask);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, mask.width, mask.height, 0, gl.RGBA, gl.FLOAT, data);
      gl.uniform1i(u("uMask"), 2);
      gl.uniform2i(u("uMaskSize"), mask.width, mask.height);
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffer);
    const pos = gl.getAttribLocation(this.program, "aPos");
    const ref = gl.getAttribLocation(this.program, "aRef");
    gl.enableVertexAttribArray(pos);
    gl.enableVertexAttribArray(ref);
    for (const verts of passes) {
      gl.bufferData(gl.ARRAY_BUFFER, verts, gl.STREAM_DRAW);
      gl.vertexAttribPointer(pos, 2, gl.FLOAT, false, 16, 0);
      gl.vertexAttribPointer(ref, 2, gl.FLOAT, false, 16, 8);
      gl.drawArrays(gl.TRIANGLES, 0, verts.length / 4);
    }
  }

  /** The rendered picture as RGBA bytes, row 0 on top. */
  readPixels() {
    const gl = this.gl;
    const out = new Uint8Array(this.width * this.height * 4);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.fbo);
    gl.readPixels(0, 0, this.width, this.height, gl.RGBA, gl.UNSIGNED_BYTE, out);
    return out;
  }
}
