// Runs inside the test VM: an HTTP server that stalls mid-stream. Each request gets the whole
// file's length in its headers and only its first `cut` bytes, then nothing, with the
// connection left open (a stall, not a hang-up). Says on stdout when it went quiet and when
// the client closed the connection.
//
//   node stall-server.ts <file> <cut>   ->  "listening <port>", "quiet after <n> bytes", ...
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const [file, cutText] = process.argv.slice(2);
if (!file || !cutText) {
  console.error('usage: stall-server.ts <file> <cut>');
  process.exit(2);
}
const data = fs.readFileSync(file);
const cut = Number(cutText);
let requests = 0;
const server = http.createServer((req, res) => {
  const n = ++requests;
  res.writeHead(200, { 'content-type': 'video/mp2t', 'content-length': data.length });
  res.write(data.subarray(0, cut), () => console.log(`quiet after ${cut} bytes (request ${n})`));
  req.socket.on('close', () => console.log(`closed by the client (request ${n})`));
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`));
