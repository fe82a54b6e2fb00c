// Parse and semantically check KQL queries with Microsoft's Kusto language service
// (npm @kusto/language-service-next), against the tables given on stdin.
// stdin:  {"tables": {"AppTraces": {"Message": "string", ...}}, "queries": {"name": "text", ...}}
// stdout: {"name": ["Error: ...", ...], ...}  (empty lists: the query is clean)
"use strict";
global.Bridge = require("@kusto/language-service-next/bridge.min.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.min.js");

const K = Kusto.Language;
const S = K.Symbols;

function analyze(input) {
  const tables = Object.entries(input.tables).map(([name, columns]) =>
    new S.TableSymbol.$ctor4(
      name,
      Object.entries(columns).map(([column, type]) => new S.ColumnSymbol(column, S.ScalarTypes.GetSymbol(type))),
    ),
  );
  const globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.ctor("workspace", tables));
  const report = {};
  for (const [name, text] of Object.entries(input.queries)) {
    const diagnostics = K.KustoCode.ParseAndAnalyze(text, globals).GetDiagnostics();
    const found = [];
    for (let index = 0; index < diagnostics.Count; index++) {
      const diagnostic = diagnostics.getItem(index);
      found.push(`${diagnostic.Severity}: ${diagnostic.Message} (at ${diagnostic.Start})`);
    }
    report[name] = found;
  }
  return report;
}

let text = "";
process.stdin.on("data", (chunk) => (text += chunk));
process.stdin.on("end", () => process.stdout.write(JSON.stringify(analyze(JSON.parse(text)))));
