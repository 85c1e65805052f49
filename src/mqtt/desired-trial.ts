import type { Logger } from '../log/logger.ts';
import type { EventBus } from '../supervisor/bus.ts';
import { brokerName } from './broker-name.ts';
import { type TrialAtBoot, trialPromote, trialRollBack } from './desired-store.ts';

export interface TrialWatchDeps {
  readonly bus: EventBus;
  readonly dataDir: string;
  readonly trial: TrialAtBoot;
  /** The broker the config on trial names (without credentials in what is logged). */
  readonly brokerUrl: string;
  readonly logger: Logger;
  /** Starts the supervisor again, now on the last good config (an orderly stop; systemd starts it). */
  readonly restart: (reason: string) => void;
}

/**
 * Watches one start that runs a desired config on trial: the first CONNACK makes it the last
 * good config; none within `trial.seconds` rolls it back and restarts on the last good one,
 * which then reports ERR_ROLLED_BACK. Returns a function that stops watching.
 */
export function trialWatch(deps: TrialWatchDeps): () => void {
  const { bus, dataDir, trial, logger } = deps;
  const broker = deps.brokerUrl === '' ? 'no broker (mqtt.url is empty)' : brokerName(deps.brokerUrl);
  let lastError: string | undefined;
  const offs: Array<() => void> = [];
  const done = (): void => {
    clearTimeout(timer);
    for (const off of offs.splice(0)) off();
  };
  const timer = setTimeout(() => {
    done();
    const reason = `no CONNACK from ${broker} within ${trial.seconds} s${lastError ? ` (${lastError})` : ''}`;
    trialRollBack(dataDir, reason);
    logger.error(
      { code: 'ERR_ROLLED_BACK', version: trial.version },
      `desired config version ${trial.version} rolled back: ${reason}; restarting on the last good config`,
    );
    deps.restart(`desired config version ${trial.version} rolled back`);
  }, trial.seconds * 1000);
  offs.push(
    bus.on('mqtt.connection', (event) => {
      if (!event.connected) {
        if (event.reason) lastError = event.reason;
        return;
      }
      done();
      trialPromote(dataDir);
      logger.info(
        { version: trial.version },
        `desired config version ${trial.version} reached ${broker}: it is now the last good config`,
      );
    }),
  );
  logger.warn(
    { version: trial.version, seconds: trial.seconds, start: trial.boots },
    `desired config version ${trial.version} on trial: it must reach ${broker} within ${trial.seconds} s or the box rolls back`,
  );
  return done;
}
