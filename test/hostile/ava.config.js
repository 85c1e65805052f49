// The hostile suite (npm run test:hostile): attacks on the real supervisor and Debian's mosquitto,
// one ava test per attack, kept out of the main suite's glob (test/**/*.test.ts).
export default {
  files: ['test/hostile/**/*.hostile.ts'],
  extensions: { ts: 'module' },
  timeout: '120s',
  workerThreads: false,
  concurrency: 2,
  environmentVariables: { MULTIHEAD_REALTIME: '1' },
};
