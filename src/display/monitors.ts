import type { ConnectorInfo, MonitorInfo, OutputInfo } from '../native/addon.ts';

/** Whether two EDID readings are the same monitor (maker, product, name and serial). */
export function monitorSame(a: MonitorInfo, b: MonitorInfo | null): boolean {
  return (
    b !== null &&
    a.manufacturer === b.manufacturer &&
    a.productCode === b.productCode &&
    (a.name ?? null) === (b.name ?? null) &&
    (a.serial ?? null) === (b.serial ?? null)
  );
}

/** A monitor as a person names it: "DELL U2419H (serial 7X9...)", or its maker and product code. */
export function monitorName(m: MonitorInfo): string {
  const what = m.name ?? `${m.manufacturer} product ${m.productCode}`;
  return m.serial ? `${what} (serial ${m.serial})` : what;
}

export interface MonitorChange {
  readonly output: string;
  readonly before: MonitorInfo;
  readonly after: MonitorInfo | null;
}

/**
 * The monitor last seen on each connector, from the EDID the kernel read. Kept while a
 * connector is unplugged, so a screen swapped while the box was looking away is still told
 * when the new one is driven.
 */
export class MonitorWatch {
  readonly #last = new Map<string, MonitorInfo>();

  /** Each driven connector's monitor now (null: no readable EDID), and where it changed. */
  take(
    driven: readonly Pick<OutputInfo, 'connector'>[],
    connectors: readonly Pick<ConnectorInfo, 'name' | 'monitor'>[],
  ): { monitors: Record<string, MonitorInfo | null>; changed: MonitorChange[] } {
    const monitors: Record<string, MonitorInfo | null> = {};
    const changed: MonitorChange[] = [];
    for (const { connector } of driven) {
      const now = connectors.find((c) => c.name === connector)?.monitor ?? null;
      monitors[connector] = now;
      const before = this.#last.get(connector);
      if (before && !monitorSame(before, now)) changed.push({ output: connector, before, after: now });
      if (now) this.#last.set(connector, now);
    }
    return { monitors, changed };
  }
}
