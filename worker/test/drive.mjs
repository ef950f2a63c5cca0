// Run the real Worker (src/index.js, configured by wrangler.toml) in workerd through Miniflare,
// put R2 notifications on its queue, and stream what happens as JSON lines on stdout.
//
//   node test/drive.mjs <scenario.json>
//
// scenario: {
//   "reconcilerUrl": "http://127.0.0.1:<port>",   // RECONCILER_URL (overrides wrangler.toml)
//   "secret": "...",                              // EVENTS_WEBHOOK_SECRET (a secret binding in production)
//   "vars": {"RETRY_BASE_SECONDS": "1", ...},     // other [vars] overrides
//   "consumer": {"maxRetries": 2, ...},           // queue consumer overrides (else wrangler.toml's)
//   "messages": [<R2 notification>, ...],         // sent to the queue one by one, as R2 would
//   "settle": <n>,                                // stop once n messages are acked or dead-lettered
//   "timeoutSeconds": 60
// }
//
// Lines: every line the Worker logs ({"worker": "r2-events", "id", "attempts", "outcome", ...}),
// {"dlq": ...} for each message reaching the dead letter queue, and last {"driver": "done", ...}.
// Driven by tests/worker/test_worker.py; exits 0 when settled, 2 on timeout.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));

// The Worker exactly as wrangler.toml configures it: its vars, queue consumer and producer.
const { workerOptions } = unstable_getMiniflareWorkerOptions(resolve(root, "wrangler.toml"));
const [queueName, consumer] = Object.entries(workerOptions.queueConsumers)[0];
const deadLetterQueue = consumer.deadLetterQueue;

const emit = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const acked = [];
const deadLettered = [];
let retries = 0;

function onLine(text) {
  if (!text.startsWith("{")) return;
  let line;
  try {
    line = JSON.parse(text);
  } catch {
    return;
  }
  if (line.worker === "r2-events") {
    if (line.outcome === "ack") acked.push(line.id);
    if (line.outcome === "retry") retries += 1;
  } else if (line.dlq) {
    deadLettered.push(line.body);
  } else {
    return;
  }
  emit(line);
}

// Miniflare's own messages (retries, dead-lettering) go to stderr: stdout carries only JSON lines.
class StderrLog extends Log {
  log(message) {
    process.stderr.write(`${message}\n`);
  }
}

const mf = new Miniflare({
  log: new StderrLog(LogLevel.WARN),
  cf: false, // no fetch of Request.cf from workers.cloudflare.com
  handleRuntimeStdio(stdout, stderr) {
    createInterface({ input: stdout }).on("line", onLine);
    createInterface({ input: stderr }).on("line", (text) => process.stderr.write(`${text}\n`));
  },
  workers: [
    {
      ...workerOptions,
      name: "reconciler-events",
      modules: true,
      scriptPath: resolve(root, "src/index.js"),
      bindings: {
        ...workerOptions.bindings,
        ...(scenario.vars || {}),
        RECONCILER_URL: scenario.reconcilerUrl,
        EVENTS_WEBHOOK_SECRET: scenario.secret,
      },
      queueConsumers: { [queueName]: { ...consumer, maxBatchTimeout: 1, ...(scenario.consumer || {}) } },
    },
    {
      // Test only: puts messages on the queue as R2 does, and reads the dead letter queue.
      name: "test-harness",
      modules: true,
      script: `export default {
        async fetch() { return new Response("harness"); },
        async queue(batch) {
          for (const m of batch.messages) { console.log(JSON.stringify({ dlq: true, id: m.id, attempts: m.attempts, body: m.body })); m.ack(); }
        },
      };`,
      compatibilityDate: workerOptions.compatibilityDate,
      queueProducers: { EVENTS: { queueName } },
      queueConsumers: { [deadLetterQueue]: { maxBatchTimeout: 1 } },
    },
  ],
});

let code = 0;
try {
  await mf.ready;
  const queue = await mf.getQueueProducer("EVENTS", "test-harness");
  for (const message of scenario.messages) {
    // R2 event notifications are JSON messages.
    await queue.send(message, { contentType: "json" });
  }
  emit({ driver: "sent", count: scenario.messages.length, queue: queueName, deadLetterQueue });
  const deadline = Date.now() + (scenario.timeoutSeconds ?? 60) * 1000;
  const settle = scenario.settle ?? scenario.messages.length;
  while (acked.length + deadLettered.length < settle) {
    if (Date.now() > deadline) {
      code = 2;
      break;
    }
    await new Promise((done) => setTimeout(done, 100));
  }
  // Let a line still in flight arrive.
  await new Promise((done) => setTimeout(done, 300));
} finally {
  emit({ driver: "done", settled: code === 0, acked, deadLettered, retries });
  await mf.dispose();
}
process.exit(code);
