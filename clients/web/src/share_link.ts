// The link that drops someone else straight into this world: /?world=NAME.
import { el } from "./dom";
import { toast } from "./toasts";

export function shareUrl(world: string): string {
  const url = new URL(window.location.href);
  url.search = "";
  url.hash = "";
  url.searchParams.set("world", world);
  return url.toString();
}

/** Put ?world=NAME in the address bar, so reloading (or copying it) rejoins this world. */
export function showWorldInAddressBar(world: string): void {
  const url = shareUrl(world);
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

  constructor() {
    this.element = el("button", "chip share", { type: "button", title: "Copy a link to this world", id: "share" }, [
      "Copy link",
    ]);
    this.element.addEventListener("click", async () => {
      const url = shareUrl(this.world);
      const ok = await copyText(url);
      toast(ok ? "Link copied — anyone with it joins this world" : url, ok ? "success" : "info");
      this.element.blur(); // give the keys back to walking
    });
  }

  setWorld(world: string): void {
    this.world = world;
    this.element.dataset["url"] = shareUrl(world);
  }
}
