// QEMU guestfwd helper: one per guest connection, relays stdin/stdout to 127.0.0.1:<port>
// (the test's broker). Started by QEMU as "guestfwd=...-cmd:node relay.ts PORT".
import net from 'node:net';

const port = Number(process.argv[2]);
const socket = net.connect(port, '127.0.0.1');
process.stdin.pipe(socket);
socket.pipe(process.stdout);
const end = (): void => process.exit(0);
socket.on('close', end);
socket.on('error', end);
process.stdin.on('end', () => socket.end());
