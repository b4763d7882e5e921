// Render batching: messages only mark parts of the page dirty; each dirty part is drawn once in the next
// animation frame, however many messages arrived in between.

const renderers = new Map();
const dirty = new Set();
let frame = 0;

/** Register the function that draws one part of the page. */
export function onRender(part, draw) {
  renderers.set(part, draw);
}

/** Mark a part dirty; it is redrawn in the next frame. */
export function invalidate(part) {
  dirty.add(part);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  const parts = [...dirty];
  dirty.clear();
  for (const part of parts) {
    const draw = renderers.get(part);
    if (!draw) continue;
    try {
      draw();
    } catch (err) {
      // One broken part must not freeze the rest of the page.
      console.error(`render ${part} failed`, err);
    }
  }
}
