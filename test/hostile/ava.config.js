// The hostile suite (npm run test:hostile): attacks on the real supervisor and Debian's mosquitto,
// one ava test per attack, kept out of the main suite's glob (test/**/*.test.ts).
export default {
  files: ['test/hostile/**/*.hostile.ts'],
  extensions: { ts: 'module' },
  // ava's timeout is a silence across all tests; each attack bounds its own waits (90 s at most)
  // and says what it waited for. A loaded CI machine once went 120 s without a result while an
  // attack was still inside its bounds, and ava's TAP reporter crashed on the timeout, naming none.
  timeout: '300s',
  workerThreads: false,
  concurrency: 2,
  environmentVariables: { MULTIHEAD_REALTIME: '1' },
};
