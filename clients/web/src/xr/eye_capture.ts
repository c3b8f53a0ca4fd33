// Tests read back what a headset eye shows: one eye's viewport of the framebuffer drawn in
// this headset frame.

/** One eye's picture: grey levels (mean of R, G, B), rows bottom up as `readPixels` gives them. */
export interface EyeCapture {
  width: number;
  height: number;
  grey: number[];
}

export function readEye(gl: WebGLRenderingContext | WebGL2RenderingContext, vp: { x: number; y: number; width: number; height: number }): EyeCapture {
  const rgba = new Uint8Array(vp.width * vp.height * 4);
  gl.readPixels(vp.x, vp.y, vp.width, vp.height, gl.RGBA, gl.UNSIGNED_BYTE, rgba);
  const grey = new Array<number>(vp.width * vp.height);
  for (let i = 0; i < grey.length; i++) grey[i] = Math.round((rgba[4 * i]! + rgba[4 * i + 1]! + rgba[4 * i + 2]!) / 3);
  return { width: vp.width, height: vp.height, grey };
}
