// Keyboard and screen-reader helpers shared by the dialogs (symbol detail, token form) and the charts.

const FOCUSABLE = 'a[href], button, input, select, textarea, [tabindex]';

/** The elements Tab reaches inside `root`, in document order. */
export function tabbables(root) {
  return [...root.querySelectorAll(FOCUSABLE)]
    .filter((el) => el.tabIndex >= 0 && !el.disabled && el.checkVisibility());
}

/** From a dialog's keydown handler: Tab and Shift+Tab cycle through the dialog and never leave it. */
export function keepTabInside(root, event) {
  if (event.key !== 'Tab' || event.altKey || event.ctrlKey || event.metaKey) return;
  const items = tabbables(root);
  const active = document.activeElement;
  if (!items.length) {
    event.preventDefault();
    return;
  }
  const first = items[0];
  const last = items[items.length - 1];
  const outside = !root.contains(active) || active === root;
  if (event.shiftKey && (active === first || outside)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && (active === last || outside)) {
    event.preventDefault();
    first.focus();
  }
}

/** Focus `target` again if it is still on the page and visible; whether focus is there now. */
export function restoreFocus(target) {
  if (!target || target === document.body || !target.isConnected || !target.checkVisibility()) return false;
  target.focus();
  return document.activeElement === target;
}

/** A chart's text alternative: role img and an aria-label, written only when the description changed. */
export function describe(node, text) {
  if (node.getAttribute('role') !== 'img') node.setAttribute('role', 'img');
  if (node.getAttribute('aria-label') !== text) node.setAttribute('aria-label', text);
}

/** The lowest and highest finite numbers of a list (null when there is none). */
export function range(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (typeof v === 'number' && Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return lo === Infinity ? null : { lo, hi };
}
