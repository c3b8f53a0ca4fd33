// Entry point: a shared link (/?world=NAME, &invite=INVITE for a private world) goes
// straight into that world; otherwise the start screen asks what to do.
import "./style.css";
import { isValidInvite, isValidPlayerName, isValidWorldName, playerName } from "./identity";
import { GameSession } from "./session";
import { showStartScreen, type StartChoice } from "./start_screen";
import { exposeHooks } from "./test_hooks";

function choiceFromLink(): StartChoice | null {
  const params = new URLSearchParams(window.location.search);
  const world = params.get("world")?.trim().toLowerCase();
  if (!world || !isValidWorldName(world)) return null;
  const name = params.get("name");
  const invite = params.get("invite");
  return {
    target: { kind: "join", world, invite: invite && isValidInvite(invite) ? invite : null },
    playerName: name && isValidPlayerName(name) ? name : playerName(),
  };
}

async function main(): Promise<void> {
  const linked = choiceFromLink();
  const badLink = !linked && new URLSearchParams(window.location.search).has("world");
  const choice = linked ?? (await showStartScreen(badLink ? "That link does not name a valid world." : ""));
  const session = new GameSession(choice);
  exposeHooks(session);
}

void main();
