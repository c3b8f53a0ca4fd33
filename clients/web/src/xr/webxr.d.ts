// The part of the WebXR Device API this client uses (TypeScript's DOM library has none of
// it). Declared here rather than taken from a types package so the build needs nothing new.

type XRSessionMode = "inline" | "immersive-vr" | "immersive-ar";
type XRReferenceSpaceType = "viewer" | "local" | "local-floor" | "bounded-floor" | "unbounded";
type XREye = "left" | "right" | "none";
type XRHandedness = "left" | "right" | "none";

interface XRSystem {
  isSessionSupported(mode: XRSessionMode): Promise<boolean>;
  requestSession(mode: XRSessionMode, options?: { requiredFeatures?: string[]; optionalFeatures?: string[] }): Promise<XRSession>;
}

interface Navigator {
  readonly xr?: XRSystem;
}

interface WebGLContextAttributes {
  xrCompatible?: boolean;
}

interface XRRigidTransform {
  readonly position: DOMPointReadOnly;
  readonly orientation: DOMPointReadOnly;
}

interface XRView {
  readonly eye: XREye;
  readonly projectionMatrix: Float32Array;
  readonly transform: XRRigidTransform;
}

interface XRViewerPose {
  readonly transform: XRRigidTransform;
  readonly views: readonly XRView[];
}

interface XRSpace extends EventTarget {}
interface XRReferenceSpace extends XRSpace {}

interface XRFrame {
  getViewerPose(space: XRReferenceSpace): XRViewerPose | null;
}

interface XRInputSource {
  readonly handedness: XRHandedness;
  readonly gamepad?: Gamepad;
}

interface XRViewport {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

interface XRWebGLLayer {
  readonly framebuffer: WebGLFramebuffer | null;
  getViewport(view: XRView): XRViewport | null;
}

declare var XRWebGLLayer: {
  prototype: XRWebGLLayer;
  new (session: XRSession, context: WebGL2RenderingContext | WebGLRenderingContext): XRWebGLLayer;
};

interface XRRenderState {
  readonly baseLayer?: XRWebGLLayer;
}

interface XRSession extends EventTarget {
  readonly renderState: XRRenderState;
  readonly inputSources: Iterable<XRInputSource>;
  updateRenderState(state: { baseLayer?: XRWebGLLayer }): void;
  requestReferenceSpace(type: XRReferenceSpaceType): Promise<XRReferenceSpace>;
  requestAnimationFrame(callback: (time: number, frame: XRFrame) => void): number;
  end(): Promise<void>;
}
