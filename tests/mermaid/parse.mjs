// Parses Mermaid diagrams with Mermaid's own parser and prints what it read.
// stdin: a JSON array of diagram texts. stdout: a JSON array, one entry per diagram:
// {"type", "nodes": {id: label}, "edges": [[from, to, label]]} or {"error": message}.
// Labels are decoded as Mermaid renders them: entity codes (#35;) become characters.
import { JSDOM } from "jsdom";
import fs from "fs";

const dom = new JSDOM("<!DOCTYPE html><body></body>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

// Mermaid hides entity codes from its lexer as these markers; rendering turns them back.
const decode = (text) =>
  text
    .replace(/ﬂ°°(\d+)¶ß/g, (_, code) => String.fromCodePoint(Number(code)))
    .replace(/ﬂ°(\w+)¶ß/g, (_, name) => dom.window.document.createRange()
      .createContextualFragment(`&${name};`).textContent);

const results = [];
for (const text of JSON.parse(fs.readFileSync(0, "utf8"))) {
  try {
    const parsed = await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const nodes = {};
    for (const [id, vertex] of diagram.db.getVertices()) nodes[id] = decode(vertex.text);
    const edges = diagram.db.getEdges().map((e) => [e.start, e.end, decode(e.text)]);
    results.push({ type: parsed.diagramType, nodes, edges });
  } catch (error) {
    results.push({ error: String(error.message || error) });
  }
}
process.stdout.write(JSON.stringify(results));
