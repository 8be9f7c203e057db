import { type DeviceSpec, parseDevice } from '../../src/engine/execution-provider.js';

/** Engine tests run on the CPU in CI; GENQUEUE_TEST_DEVICE=cuda:0 runs the same tests on the GPU machine. */
export function testDevice(): DeviceSpec {
  return parseDevice(process.env.GENQUEUE_TEST_DEVICE ?? 'cpu');
}
