// Grade a local server with MDN's HTTP Observatory (the library behind
// developer.mozilla.org/observatory). Its `scan()` drops the port, so this
// calls its retriever with explicit ports and its own tests and grader.
//
// node observatory.mjs HOST HTTP_PORT HTTPS_PORT [PATH]
// (NODE_EXTRA_CA_CERTS must point at the test CA.) Exits 0 on A+.
import { retrieve } from "@mdn/mdn-http-observatory/src/retriever/retriever.js";
import { ALL_TESTS } from "@mdn/mdn-http-observatory/src/constants.js";
import { MINIMUM_SCORE_FOR_EXTRA_CREDIT } from "@mdn/mdn-http-observatory/src/grader/charts.js";
import { getGradeForScore, getScoreModifier } from "@mdn/mdn-http-observatory/src/grader/grader.js";

const [host, httpPort, httpsPort, path = "/"] = process.argv.slice(2);
const r = await retrieve(host, { httpPort, httpsPort, path });
if (!r.responses.auto) {
  console.error(`observatory: ${host} did not answer`);
  process.exit(2);
}
let withExtra = 100;
let uncurved = 100;
const notes = [];
for (const test of ALL_TESTS) {
  const out = test(r);
  if (!out.result) continue;
  const m = getScoreModifier(out.result);
  withExtra += m;
  if (m < 0) uncurved += m;
  notes.push(`${out.constructor.name}: ${out.result} (${m >= 0 ? "+" : ""}${m})`);
}
const score = uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT ? withExtra : uncurved;
const { grade } = getGradeForScore(score);
console.log(`observatory ${path}: grade ${grade}, score ${score}`);
for (const n of notes) console.log(`  ${n}`);
process.exit(grade === "A+" ? 0 : 1);
