// Every behaviour suite runs once per backend.
import { withBackend, type BackendName } from 'kronlora';

export const backends: BackendName[] = ['native', 'wasm'];
export const on = (name: BackendName) => withBackend(name);
