// The link that drops someone else straight into this world: /?world=NAME, plus
// &invite=INVITE for a private world (the server lets no one in without it).
import { el } from "./dom";
import { toast } from "./toasts";

export function shareUrl(world: string, invite: string | null = null, base: string = window.location.href): string {
  const url = new URL(base);
  url.search = "";
  url.hash = "";
  url.searchParams.set("world", world);
  if (invite) url.searchParams.set("invite", invite);
  return url.toString();
}

/** Put ?world=NAME(&invite=…) in the address bar, so reloading (or copying it) rejoins this world. */
export function showWorldInAddressBar(world: string, invite: string | null = null): void {
  const url = shareUrl(world, invite);
  if (url !== window.location.href) history.replaceState(null, "", url);
}

async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard permission (plain http on a LAN address): fall back to a selection copy.
    const area = el("textarea", "offscreen", { readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

export class ShareButton {
  readonly element: HTMLButtonElement;
  private world = "";
  private invite: string | null = null;

  constructor() {
    this.element = el("button", "chip share", { type: "button", title: "Copy a link to this world", id: "share" }, [
      "Copy link",
    ]);
    this.element.addEventListener("click", async () => {
      const url = shareUrl(this.world, this.invite);
      const ok = await copyText(url);
      const who = this.invite ? "anyone with it joins this private world" : "anyone with it joins this world";
      toast(ok ? `Link copied — ${who}` : url, ok ? "success" : "info");
      this.element.blur(); // give the keys back to walking
    });
  }

  setWorld(world: string, invite: string | null = null): void {
    this.world = world;
    this.invite = invite;
    this.element.dataset["url"] = shareUrl(world, invite);
    this.element.title = invite ? "Copy the invite link to this private world" : "Copy a link to this world";
  }
}

/** The creator's control over a private world's link: a new invite, the old link stops working. */
export class RevokeButton {
  readonly element: HTMLButtonElement;

  constructor(revoke: () => boolean) {
    this.element = el("button", "chip revoke", {
      type: "button",
      id: "revoke-invite",
      title: "Make a new invite link: people with the old one can no longer join (players inside stay)",
    }, ["New link"]);
    this.element.hidden = true;
    this.element.addEventListener("click", () => {
      if (!revoke()) toast("Not connected: try again in a moment", "error");
      this.element.blur();
    });
  }

  /** Shown only to the creator of a private world. */
  setOwner(owner: boolean, isPrivate: boolean): void {
    this.element.hidden = !(owner && isPrivate);
  }
}
