/**
 * A jest environment for tests that run onnxruntime-node. onnxruntime builds its output
 * tensors from typed arrays made in Node's own realm and checks them with `instanceof`
 * against the test realm's constructors; jest's sandbox has its own, so every run would fail.
 * Sharing the host realm's typed-array constructors makes both sides agree.
 */
const { TestEnvironment } = require('jest-environment-node');

const TYPED_ARRAYS = [
  'Float32Array',
  'Float64Array',
  'Int8Array',
  'Uint8Array',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'BigInt64Array',
  'BigUint64Array',
  'ArrayBuffer',
];

class OnnxRuntimeEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of TYPED_ARRAYS) this.global[name] = globalThis[name];
  }
}

module.exports = OnnxRuntimeEnvironment;
