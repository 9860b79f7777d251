// localStorage that never throws: private windows and locked-down browsers refuse it, and
// the page then simply forgets (the language, the operator's name) between visits.

export function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function storageSet(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // not remembered: asked again next time
  }
}
