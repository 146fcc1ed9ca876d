// hello in JavaScript: every HTTP request answers `hello`; the lifecycle
// answers at once. See ../README.md.

import { denied, error, provisioned, text } from './addonhost.js';

export const lifecycle = {
  provision(request) {
    return provisioned(`hello-${request.uuid}`, { HELLO_JS_URL: request.baseUrl });
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

addEventListener('fetch', (event) => event.respondWith(text(200, 'hello\n')));
