// A test-only add-on that tries to remember earlier calls.
//
// `GET /remember` reports what it finds of earlier calls, then leaves as much
// behind for the next one: a module-level counter, a 1 MiB buffer made when
// the module was loaded (so it lives in the snapshot's heap, every byte 7),
// 1 MiB objects kept in a module-level array, and a property on globalThis.
// With a fresh instance per call every report is all zeros.

import { denied, error, json, provisioned, segments, text } from './addonhost.js';

let calls = 0;
const image = new Uint8Array(1 << 20).fill(7);
const kept = [];

export const lifecycle = {
  provision(request) {
    return provisioned(`remember-${request.uuid}`, { REMEMBER_JS_URL: request.baseUrl });
  },
  deprovision(_id) {},
  changePlan(_id, _plan) {
    return undefined;
  },
};

export const credentials = {
  rotate(_id) {
    throw error('nothing to rotate');
  },
};

export const sso = {
  verify(_login) {
    return denied('no dashboard');
  },
};

function remember() {
  const callsBefore = calls;
  calls += 1;
  // Four bytes at a time: 0x07070707 where nothing changed.
  const words = new Uint32Array(image.buffer);
  let imageResidue = 0;
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== 0x07070707) imageResidue++;
  }
  image.fill(0xa5);
  const keptBefore = kept.length;
  kept.push(new Uint8Array(1 << 20).fill(0xa5));
  const globalBefore = globalThis.rememberedByAnEarlierCall ?? 0;
  globalThis.rememberedByAnEarlierCall = globalBefore + 1;
  return json(200, { calls_before: callsBefore, image_residue: imageResidue, kept_before: keptBefore, global_before: globalBefore });
}

function handle(request) {
  const segs = segments(request);
  if (segs.length === 1 && segs[0] === 'remember') return remember();
  return text(404, 'not found\n');
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
