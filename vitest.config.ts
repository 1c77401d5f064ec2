import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests bind sockets and spawn processes; keep CPU contention sane on 2 cores.
    pool: 'forks',
    maxWorkers: 2,
    // A full garbage collection every 100 ms in each worker (what holds only until one runs fails).
    setupFiles: ['test/helpers/gc-stress-setup.ts'],
  },
});
