// Who draws the world: the server's video, or this browser from the splats (local). The
// player picks in settings (video / local / auto); auto chooses local only where the device
// can hold and draw the splats: WebGL2 on a real GPU (not a software rasteriser) and, where
// the browser says, at least 4 GB of memory. The memory budget (most Gaussians held) follows
// the device's memory; the server's feed never sends more than it (runtime/splat_feed.py).
import type { RenderMode } from "../settings";

export interface Capability {
  webgl2: boolean;
  /** The GPU is emulated in software (SwiftShader, llvmpipe): local rendering would crawl. */
  softwareGl: boolean;
  /** navigator.deviceMemory (GB), where the browser tells. */
  memoryGb: number | null;
  /** Most Gaussians to hold (the `splats` budget), and most far-field Gaussians besides. */
  maxSplats: number;
  maxFarSplats: number;
  renderer: string;
}

const SOFTWARE_GL = /swiftshader|llvmpipe|softpipe|software/i;

let probed: Capability | null = null;

/** What this browser can do (probed once, with a throwaway WebGL2 context). */
export function probeCapability(): Capability {
  if (probed) return probed;
  let webgl2 = false;
  let renderer = "";
  try {
    const gl = document.createElement("canvas").getContext("webgl2");
    if (gl) {
      webgl2 = true;
      const info = gl.getExtension("WEBGL_debug_renderer_info");
      renderer = String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
      gl.getExtension("WEBGL_lose_context")?.loseContext();
    }
  } catch {
    webgl2 = false;
  }
  const memory = (navigator as Navigator & { deviceMemory?: number }).deviceMemory;
  const memoryGb = typeof memory === "number" ? memory : null;
  // 32 bytes a Gaussian on the GPU plus about as much in flight: a few hundred MB at most.
  const maxSplats = memoryGb === null ? 2_000_000 : memoryGb >= 8 ? 4_000_000 : memoryGb >= 4 ? 2_000_000 : 750_000;
  // The far field is a coarse background (a few hundred Gaussians a keyframe, merged by the
  // server per far cell): an eighth of the scene's budget besides it is plenty.
  const maxFarSplats = Math.round(maxSplats / 8);
  probed = { webgl2, softwareGl: SOFTWARE_GL.test(renderer), memoryGb, maxSplats, maxFarSplats, renderer };
  return probed;
}

/** Can this browser draw locally at all (the settings offer "local")? */
export function localPossible(cap: Capability = probeCapability()): boolean {
  return cap.webgl2;
}

/** The mode in effect for a setting on this device. */
export function effectiveMode(setting: RenderMode, cap: Capability = probeCapability()): "video" | "local" {
  if (setting === "video" || !cap.webgl2) return "video";
  if (setting === "local") return "local";
  const enoughMemory = cap.memoryGb === null || cap.memoryGb >= 4;
  return !cap.softwareGl && enoughMemory ? "local" : "video";
}
