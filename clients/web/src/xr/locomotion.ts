// Thumbstick locomotion with comfort options: the left stick walks where the head looks,
// the right stick turns the room about the head (snap or smooth: Settings), and a vignette
// darkens the edges of the view while the sticks move the player (Settings: VR comfort
// vignette). The rig only proposes where the head goes: the server moves it with collision.
import type { SettingsStore } from "../settings";
import type { Rig, Vec3 } from "./xr_math";

const WALK_M_PER_S = 1.5;
const SMOOTH_TURN_RAD_PER_S = 1.6;
const SNAP_TURN_RAD = Math.PI / 6;
const STICK_DEAD_ZONE = 0.15;
const SNAP_ARM_BELOW = 0.3; // the stick must come back to the middle before the next snap
const SNAP_FIRE_ABOVE = 0.7;
const VIGNETTE_RISE_PER_S = 6; // to full in about 0.15 s
const VIGNETTE_FALL_PER_S = 3;
const SNAP_VIGNETTE = 1; // a snap turn flashes it, then it fades

export class Locomotion {
  /** Comfort vignette now, 0..1 (0 when the setting is off). */
  vignette = 0;
  private snapArmed = true;

  constructor(private readonly settings: SettingsStore) {}

  /** Apply the sticks for `dt` seconds to `rig`; the head is at `headXr` (XR space), turned `orientation` (x y z w). */
  update(session: XRSession, rig: Rig, headXr: Vec3, orientation: [number, number, number, number], dt: number): void {
    let moving = false;
    for (const source of session.inputSources) {
      const axes = source.gamepad?.axes;
      if (!axes || axes.length < 4) continue; // xr-standard: thumbstick is axes 2, 3
      const x = Math.abs(axes[2]!) > STICK_DEAD_ZONE ? axes[2]! : 0;
      const y = Math.abs(axes[3]!) > STICK_DEAD_ZONE ? axes[3]! : 0;
      if (source.handedness === "left" && (x || y)) {
        moving = true;
        rig.move(rig.headInWorld(headXr, orientation).orientation, -y * WALK_M_PER_S * dt, x * WALK_M_PER_S * dt);
      } else if (source.handedness === "right") {
        if (this.settings.values.vrTurn === "smooth") {
          if (x) {
            moving = true;
            rig.turn(headXr, x * SMOOTH_TURN_RAD_PER_S * dt, orientation);
          }
        } else if (this.snapArmed && Math.abs(x) > SNAP_FIRE_ABOVE) {
          rig.turn(headXr, Math.sign(x) * SNAP_TURN_RAD, orientation);
          this.snapArmed = false;
          this.vignette = Math.max(this.vignette, SNAP_VIGNETTE);
        } else if (Math.abs(x) < SNAP_ARM_BELOW) {
          this.snapArmed = true;
        }
      }
    }
    const target = moving && this.settings.values.vrVignette ? 1 : 0;
    const rate = target > this.vignette ? VIGNETTE_RISE_PER_S : VIGNETTE_FALL_PER_S;
    this.vignette += Math.sign(target - this.vignette) * Math.min(Math.abs(target - this.vignette), rate * dt);
    if (!this.settings.values.vrVignette) this.vignette = 0;
  }
}
