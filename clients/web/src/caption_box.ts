// A text box that steers what the world generates next ("a misty pine forest").
import { MAX_CAPTION_CHARS } from "./protocol";
import { el } from "./dom";

export class CaptionBox {
  readonly element: HTMLFormElement;
  private readonly input: HTMLInputElement;
  private readonly current: HTMLElement;

  constructor(private readonly onSend: (text: string) => boolean) {
    this.input = el("input", "caption-input", {
      type: "text",
      id: "caption-input",
      maxlength: MAX_CAPTION_CHARS,
      placeholder: "Steer what comes next… (Enter)",
      autocomplete: "off",
      spellcheck: false,
    });
    this.current = el("div", "caption-current", { id: "caption-current" });
    this.element = el("form", "caption-box", { id: "caption-box" }, [this.current, this.input]);
    this.element.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.input.blur();
      e.stopPropagation(); // typing must not walk
    });
  }

  /** The caption the world is generating from now (shown above the box). */
  setCurrent(text: string): void {
    this.current.textContent = text ? `“${text}”` : "";
    this.current.hidden = !text;
  }

  focus(): void {
    this.input.focus();
  }

  private submit(): void {
    const text = this.input.value.trim();
    if (!text) return;
    if (this.onSend(text)) {
      this.setCurrent(text);
      this.input.value = "";
      this.input.blur();
    }
  }
}
