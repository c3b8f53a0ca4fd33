// The start screen: pick a name, then create a world (seed, caption, optional start image,
// public or private) or join one by name. A shared link (/?world=NAME) skips this screen entirely.
import { MAX_CAPTION_CHARS, MAX_PLAYER_NAME_CHARS, MAX_SEED, type NewWorld } from "./protocol";
import type { JoinTarget } from "./connection";
import { byId, el } from "./dom";
import { isValidPlayerName, isValidWorldName, playerName, rememberPlayerName } from "./identity";
import { startImageBytes } from "./start_image";
import { recentWorldsList } from "./world_list";

export interface StartChoice {
  target: JoinTarget;
  playerName: string;
}

const CAPTION_IDEAS = [
  "a sunlit canyon with red sandstone arches",
  "a quiet pine forest after rain",
  "an old harbour town at dusk",
  "terraced rice fields in morning mist",
];

function field(label: string, input: HTMLElement, hint = ""): HTMLElement {
  return el("label", "field", {}, [el("span", "field-label", {}, [label]), input, hint ? el("span", "field-hint", {}, [hint]) : ""]);
}

/** Show the start screen; resolves with what the player chose. */
export function showStartScreen(message = ""): Promise<StartChoice> {
  const root = byId("start");
  root.replaceChildren();
  root.hidden = false;

  const name = el("input", "", { id: "start-name", maxlength: MAX_PLAYER_NAME_CHARS, autocomplete: "nickname", spellcheck: false });
  name.value = playerName();

  // --- create ---
  const caption = el("textarea", "", { id: "start-caption", rows: 2, maxlength: MAX_CAPTION_CHARS, placeholder: "Describe the world…" });
  caption.value = CAPTION_IDEAS[Math.floor(Math.random() * CAPTION_IDEAS.length)]!;
  const seed = el("input", "", { id: "start-seed", type: "number", min: 0, max: MAX_SEED, placeholder: "random" });
  const worldName = el("input", "", { id: "start-world-name", placeholder: "optional", spellcheck: false });
  const image = el("input", "", { id: "start-image", type: "file", accept: "image/png,image/jpeg,image/webp" });
  const preview = el("img", "image-preview", { alt: "" });
  preview.hidden = true;
  image.addEventListener("change", () => {
    const file = image.files?.[0];
    preview.hidden = !file;
    if (file) preview.src = URL.createObjectURL(file);
  });
  const privateBox = el("input", "", { id: "start-private", type: "checkbox" });
  const privacy = el("label", "field check", { for: "start-private" }, [
    privateBox,
    el("span", "", {}, ["Private"]),
    el("span", "field-hint", {}, ["unlisted — only people with its invite link can join"]),
  ]);
  const createButton = el("button", "button primary", { type: "submit", id: "start-create" }, ["Create world"]);
  const createForm = el("form", "start-form", { id: "create-form" }, [
    field("Caption", caption),
    el("div", "field-row", {}, [field("Seed", seed), field("World name", worldName)]),
    field("Start image", el("div", "image-pick", {}, [image, preview]), "optional — the world grows from this picture"),
    privacy,
    createButton,
  ]);

  // --- join ---
  const joinName = el("input", "", { id: "join-world", placeholder: "world name", spellcheck: false, autocapitalize: "off" });
  const joinButton = el("button", "button primary", { type: "submit", id: "start-join" }, ["Join"]);
  const recent = recentWorldsList((world) => {
    joinName.value = world;
    joinForm.requestSubmit();
  });
  const joinForm = el("form", "start-form", { id: "join-form" }, [field("World", joinName, "or open a link someone shared"), joinButton, recent]);

  const error = el("p", "start-error", { role: "alert" }, [message]);
  error.hidden = !message;
  root.append(
    el("div", "start-card", {}, [
      el("h1", "", {}, [el("span", "live-dot on"), "worldstream"]),
      el("p", "muted tagline", {}, ["Walk through a world that is generated as you go."]),
      field("Your name", name),
      el("div", "start-columns", {}, [
        el("section", "", {}, [el("h2", "", {}, ["New world"]), createForm]),
        el("section", "", {}, [el("h2", "", {}, ["Join a world"]), joinForm]),
      ]),
      error,
    ]),
  );
  name.focus();

  return new Promise((resolve) => {
    const fail = (text: string): void => {
      error.textContent = text;
      error.hidden = false;
    };
    const chosenName = (): string | null => {
      const value = name.value.trim();
      if (!isValidPlayerName(value)) {
        fail("Names use letters, digits, spaces, '.', '_' or '-' (up to 32).");
        return null;
      }
      rememberPlayerName(value);
      return value;
    };
    const done = (choice: StartChoice): void => {
      root.hidden = true;
      root.replaceChildren();
      resolve(choice);
    };

    createForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const player = chosenName();
      if (!player) return;
      const newWorld: NewWorld = { caption: caption.value.trim(), visibility: privateBox.checked ? "private" : "public" };
      if (seed.value !== "") {
        const n = Number(seed.value);
        if (!Number.isInteger(n) || n < 0 || n > MAX_SEED) return fail(`The seed is a whole number from 0 to ${MAX_SEED}.`);
        newWorld.seed = n;
      }
      const wanted = worldName.value.trim().toLowerCase();
      if (wanted) {
        if (!isValidWorldName(wanted)) return fail("World names use a-z, 0-9, '-' and '_' (up to 64).");
        newWorld.name = wanted;
      }
      const file = image.files?.[0];
      if (file) {
        createButton.disabled = true;
        try {
          newWorld.start_image = await startImageBytes(file);
        } catch (err) {
          createButton.disabled = false;
          return fail(`Start image: ${(err as Error).message}`);
        }
      }
      done({ target: { kind: "create", newWorld }, playerName: player });
    });

    joinForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const player = chosenName();
      if (!player) return;
      const world = joinName.value.trim().toLowerCase();
      if (!isValidWorldName(world)) return fail("Type the world's name (a-z, 0-9, '-' and '_').");
      done({ target: { kind: "join", world }, playerName: player });
    });
  });
}
