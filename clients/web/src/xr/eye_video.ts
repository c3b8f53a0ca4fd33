// Draws one eye's half of the side-by-side stereo video into that eye's viewport, turned to
// the eye's current orientation (reprojection.ts) and with the comfort vignette on top.
//
// Per pixel: its ray in the eye's view space (from the headset's projection), turned into
// the camera that rendered the frame (`warp`), projected with that camera's field of view;
// a ray that lands outside the rendered picture shows black.

const VERTEX_SHADER = `#version 300 es
in vec2 corner;        // the viewport's corners, -1..1
uniform vec4 proj;     // the eye's projection matrix entries [0], [5], [8], [9]
out vec3 ray;          // the pixel's ray in the eye's view space (WebXR axes)
out vec2 ndc;
void main() {
  ndc = corner;
  ray = vec3((corner.x + proj.z) / proj.x, (corner.y + proj.w) / proj.y, -1.0);
  gl_Position = vec4(corner, 0.0, 1.0);
}`;

const FRAGMENT_SHADER = `#version 300 es
precision highp float;
in vec3 ray;
in vec2 ndc;
uniform sampler2D video;
uniform mat3 warp;     // eye view space now -> the rendering camera (OpenCV: y down, +z ahead)
uniform vec2 tanHalf;  // the rendering camera's tan(fov_x / 2), tan(fov_y / 2)
uniform vec4 uvRect;   // x0, y0, width, height of this eye's half of the video (0..1, y down)
uniform float vignette; // 0 none .. 1 full: the edges go dark while the sticks move the player
out vec4 color;
void main() {
  vec3 d = warp * ray;
  vec2 p = d.xy / max(d.z, 1e-6) / tanHalf; // -1..1 across the rendered picture
  float inside = d.z > 1e-6 && abs(p.x) <= 1.0 && abs(p.y) <= 1.0 ? 1.0 : 0.0;
  vec3 rgb = texture(video, uvRect.xy + (p * 0.5 + 0.5) * uvRect.zw).rgb * inside;
  float edge = smoothstep(0.35, 0.95, length(ndc));
  color = vec4(rgb * (1.0 - vignette * edge), 1.0);
}`;

export interface EyeDraw {
  /** The eye's `XRView.projectionMatrix`. */
  projection: Float32Array;
  /** `warpMatrix(rendered, current)` for this eye. */
  warp: Float32Array;
  /** Which part of the video is this eye's picture: x0, y0, width, height in 0..1. */
  uvRect: [number, number, number, number];
  /** The rendering camera's vertical field of view (radians) and aspect (width / height). */
  fovY: number;
  aspect: number;
  vignette: number;
}

export class EyeVideo {
  private readonly program: WebGLProgram;
  private readonly texture: WebGLTexture;
  private readonly uniforms: Record<"proj" | "warp" | "tanHalf" | "uvRect" | "vignette", WebGLUniformLocation | null>;
  /** A video frame has been copied into the texture. */
  hasPicture = false;

  constructor(private readonly gl: WebGL2RenderingContext) {
    const compile = (type: number, source: string): WebGLShader => {
      const shader = gl.createShader(type)!;
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      return shader;
    };
    const program = gl.createProgram()!;
    gl.attachShader(program, compile(gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`VR shader: ${gl.getProgramInfoLog(program) ?? "link failed"}`);
    const buffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const corner = gl.getAttribLocation(program, "corner");
    gl.enableVertexAttribArray(corner);
    gl.vertexAttribPointer(corner, 2, gl.FLOAT, false, 0, 0);
    this.texture = gl.createTexture()!;
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    this.program = program;
    const at = (name: string): WebGLUniformLocation | null => gl.getUniformLocation(program, name);
    this.uniforms = { proj: at("proj"), warp: at("warp"), tanHalf: at("tanHalf"), uvRect: at("uvRect"), vignette: at("vignette") };
  }

  /** Copy the video's current frame into the texture (row 0 is the picture's top). */
  upload(video: HTMLVideoElement): void {
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, video);
    this.hasPicture = true;
  }

  /** Draw one eye into the viewport set by the caller. */
  draw(eye: EyeDraw): void {
    const gl = this.gl;
    const u = this.uniforms;
    gl.useProgram(this.program);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    const P = eye.projection;
    gl.uniform4f(u.proj, P[0]!, P[5]!, P[8]!, P[9]!);
    gl.uniformMatrix3fv(u.warp, false, eye.warp);
    const tanY = Math.tan(eye.fovY / 2);
    gl.uniform2f(u.tanHalf, tanY * eye.aspect, tanY);
    gl.uniform4f(u.uvRect, ...eye.uvRect);
    gl.uniform1f(u.vignette, eye.vignette);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }
}
