// A minimal Node.js upstream for the framing and smuggling tests (tests/tests/smuggling.rs):
// `http.createServer` with Node's defaults (llhttp, strict parsing; no `upgrade` or `connect`
// listener, like an MCP server built on it). Every request Node hands to the app is appended to
// --record as one JSON line (method, target, every header, body length), then answered with a
// small 200 JSON-RPC result, so the test reads exactly which requests this parser saw.
//
//     node recorder.mjs --record FILE
//
// Binds a free loopback port itself and prints `listening PORT` on stdout once it accepts
// connections.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

const flag = process.argv.indexOf("--record");
if (flag < 0 || !process.argv[flag + 1]) {
  console.error("usage: node recorder.mjs --record FILE");
  process.exit(2);
}
const record = process.argv[flag + 1];
const answer = '{"jsonrpc":"2.0","id":1,"result":{}}';

const server = createServer((req, res) => {
  let body = 0;
  req.on("data", (chunk) => {
    body += chunk.length;
  });
  req.on("end", () => {
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
    }
    // Synchronous: the line is in the file before the answer leaves.
    appendFileSync(
      record,
      JSON.stringify({ method: req.method, target: req.url, headers, body }) + "\n",
    );
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(answer),
    });
    res.end(answer);
  });
});

// The test ends us with SIGKILL; stdin closing means the test is gone.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();

server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
