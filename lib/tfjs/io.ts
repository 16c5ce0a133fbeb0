// Stub: the `file://` model save/load handlers of the residual tfjs backend (owned by the nn work).
// lib/tfjs/index.ts calls registerFileHandlers() once when residual/tfjs is imported.
export function registerFileHandlers(): void {}
