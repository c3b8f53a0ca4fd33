// Gamepads (standard mapping): left stick moves, right stick looks, L3 or LB runs,
// RT/LT rise/sink when flying, Y toggles fly.
import { clampAxis, NO_MOVE, type InputSource, type LookDelta, type MoveAxes } from "./source";

const DEADZONE = 0.15;
const LOOK_RADIANS_PER_SECOND = 2.6;
const BUTTON_LB = 4;
const BUTTON_LT = 6;
const BUTTON_RT = 7;
const BUTTON_L3 = 10;
const BUTTON_Y = 3;

/** Rescale past the dead zone so small stick noise is 0 and the rim is still 1. */
function deadzone(v: number): number {
  const magnitude = Math.abs(v);
  if (magnitude < DEADZONE) return 0;
  return Math.sign(v) * ((magnitude - DEADZONE) / (1 - DEADZONE));
}

export class GamepadInput implements InputSource {
  private yWasDown = false;
  connected = false;

  constructor(private readonly onToggleFly: () => void) {}

  private pad(): Gamepad | null {
    if (!navigator.getGamepads) return null;
    for (const pad of navigator.getGamepads()) if (pad && pad.connected) return pad;
    return null;
  }

  axes(): MoveAxes {
    const pad = this.pad();
    this.connected = pad !== null;
    if (!pad) return NO_MOVE;
    const yDown = pad.buttons[BUTTON_Y]?.pressed ?? false;
    if (yDown && !this.yWasDown) this.onToggleFly();
    this.yWasDown = yDown;
    const value = (i: number): number => pad.buttons[i]?.value ?? 0;
    return {
      forward: clampAxis(-deadzone(pad.axes[1] ?? 0)),
      right: clampAxis(deadzone(pad.axes[0] ?? 0)),
      up: clampAxis(value(BUTTON_RT) - value(BUTTON_LT)),
      run: (pad.buttons[BUTTON_L3]?.pressed ?? false) || (pad.buttons[BUTTON_LB]?.pressed ?? false),
    };
  }

  takeLook(dt: number): LookDelta {
    const pad = this.pad();
    if (!pad) return { yaw: 0, pitch: 0 };
    // Sticks give a turn rate; integrate it over the frame time.
    return {
      yaw: deadzone(pad.axes[2] ?? 0) * LOOK_RADIANS_PER_SECOND * dt,
      pitch: -deadzone(pad.axes[3] ?? 0) * LOOK_RADIANS_PER_SECOND * dt,
    };
  }

  release(): void {
    /* a gamepad reports its own state every frame */
  }
}
