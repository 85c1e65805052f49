// Its own module: the installer screen names the broker without loading the MQTT client library.

/** The broker's address without credentials, for logs and screens. */
export function brokerName(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '(invalid URL)';
  }
}
