// The official MCP TypeScript SDK as a server (Streamable HTTP on /mcp, stateful sessions), for
// the scan tests: `node server.mjs --port P [--host H] [--protection on|off]`. With protection
// on, the SDK's own DNS-rebinding protection allows Host 127.0.0.1:P and Origin
// http://127.0.0.1:P only. Prints `listening P` on stdout once it accepts connections.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
}
const port = Number(args.port);
const host = args.host ?? "127.0.0.1";
const protection = args.protection === "on";
const transports = new Map();

function newServer() {
  const server = new McpServer({ name: "e2e-ts-upstream", version: "1.0.0" });
  server.tool("greet", "Says hello", async () => ({
    content: [{ type: "text", text: "hello from the TypeScript SDK server" }],
  }));
  return server;
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : undefined;
}

function badRequest(res, message) {
  res.writeHead(400, { "content-type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message } }));
}

const httpServer = http.createServer(async (req, res) => {
  try {
    if (new URL(req.url, "http://x").pathname !== "/mcp") {
      res.writeHead(404).end();
      return;
    }
    let body;
    if (req.method === "POST") {
      try {
        body = await readJson(req);
      } catch {
        badRequest(res, "Parse error");
        return;
      }
    }
    const sessionId = req.headers["mcp-session-id"];
    let transport = sessionId ? transports.get(sessionId) : undefined;
    if (!transport) {
      if (req.method !== "POST" || !isInitializeRequest(body)) {
        badRequest(res, "Bad Request: No valid session ID provided");
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => transports.set(id, transport),
        enableDnsRebindingProtection: protection,
        allowedHosts: [`127.0.0.1:${port}`],
        allowedOrigins: [`http://127.0.0.1:${port}`],
      });
      transport.onclose = () => {
        if (transport.sessionId) transports.delete(transport.sessionId);
      };
      await newServer().connect(transport);
    }
    await transport.handleRequest(req, res, body);
  } catch (e) {
    console.error(e);
    if (!res.headersSent) res.writeHead(500).end();
  }
});
httpServer.listen(port, host, () => console.log(`listening ${port}`));
