// An MCP client built with the official TypeScript SDK, driving the e2e server's full sequence.
//
//     node client.mjs URL [--transport streamable|sse] [--refused TOOL]
//
// Initializes, lists tools, calls `add` and `count` (collecting every progress notification in the
// order received), reads `config://greeting`, then ends the session with DELETE (Streamable HTTP).
// With --refused TOOL it also calls TOOL (a tool the gateway refuses) and records the error.
// Prints one JSON object with what it received; the test asserts on it.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const at = rest.indexOf(name);
  return at >= 0 ? rest[at + 1] : fallback;
};
const transportName = option("--transport", "streamable");
const refused = option("--refused", undefined);
if (!url) {
  console.error("usage: node client.mjs URL [--transport streamable|sse] [--refused TOOL]");
  process.exit(2);
}

const textOf = (result) => result.content.filter((c) => c.type === "text").map((c) => c.text);

const transport =
  transportName === "sse"
    ? new SSEClientTransport(new URL(url))
    : new StreamableHTTPClientTransport(new URL(url));
const client = new Client({ name: "e2e-ts-client", version: "1.0.0" });
const summary = {};

await client.connect(transport);
summary.server_name = client.getServerVersion()?.name;
summary.protocol_version = transport.protocolVersion ?? null;
const tools = await client.listTools();
summary.tools = tools.tools.map((t) => t.name).sort();
const added = await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
summary.add = textOf(added);
summary.add_is_error = Boolean(added.isError);
const progress = [];
const counted = await client.callTool({ name: "count", arguments: { steps: 3 } }, undefined, {
  onprogress: (p) =>
    progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null }),
});
summary.count = textOf(counted);
summary.progress = progress;
const resource = await client.readResource({ uri: "config://greeting" });
summary.resource = resource.contents.map((c) => c.text ?? null);
if (refused !== undefined) {
  try {
    const result = await client.callTool({ name: refused, arguments: {} });
    summary.refused = { result: textOf(result), is_error: Boolean(result.isError) };
  } catch (error) {
    summary.refused = { error: String(error?.message ?? error) };
  }
}
if (transportName !== "sse") {
  // Ends the session on the server (HTTP DELETE with the session id).
  await transport.terminateSession();
  summary.session_terminated = transport.sessionId === undefined;
}
await client.close();
summary.closed = true;
console.log(JSON.stringify(summary));
