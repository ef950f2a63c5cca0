/**
 * The R2 event Queue's consumer: POST each batch, signed, to the reconciler's
 * `/api/v1/events/r2`, and settle every message by what the reconciler answered.
 *
 * The reconciler records a body in one transaction and answers (uploads/api_events.py):
 *   202         every event in the body is recorded           -> ack the messages
 *   400, 413    the body (some message in it) is unreadable or too big; nothing recorded
 *               -> a batch is split and each message posted alone; a message refused on its own
 *                  is dead-lettered (sent to DEAD_LETTER_QUEUE and acked, or retried until the
 *                  queue's max_retries moves it to the dead letter queue when that binding is absent)
 *   other 4xx   401 bad or stale signature, 415, 404...: about the request or the configuration,
 *               not a message -> retry every message with a delay (after max_retries: dead letter queue)
 *   5xx, no answer, timeout -> retry every message with a delay
 * So one bad message neither holds back the rest nor is lost, and an outage only delays.
 *
 * Signature, exactly as `signature_for` in uploads/api_events.py checks it:
 *   X-Signature-Timestamp: <unix seconds>
 *   X-Signature: sha256=<hex HMAC-SHA256(EVENTS_WEBHOOK_SECRET, timestamp + "." + raw body)>
 *
 * Each settled message is logged as one JSON line (id, attempts, outcome, HTTP status or reason);
 * neither the secret nor the URL is ever logged.
 */

const EVENTS_PATH = "/api/v1/events/r2";
const MAX_DELAY_SECONDS = 43200; // the most a Cloudflare Queue accepts for a retry delay
const encoder = new TextEncoder();

export default {
  async queue(batch, env) {
    const config = readConfig(env);
    const messages = [...batch.messages];
    if (config.problem) {
      // Not configured: keep everything (retried, then dead-lettered by the queue), lose nothing.
      retry(messages, config, { reason: config.problem });
      return;
    }
    const answer = await post(messages, config);
    if (answer.accepted) {
      ack(messages, answer);
    } else if (answer.refusesContent && messages.length > 1) {
      for (const message of messages) {
        await settleAlone(message, config, env);
      }
    } else if (answer.refusesContent) {
      await deadLetter(messages[0], config, env, answer);
    } else {
      retry(messages, config, answer);
    }
  },
};

async function settleAlone(message, config, env) {
  const answer = await post([message], config);
  if (answer.accepted) {
    ack([message], answer);
  } else if (answer.refusesContent) {
    await deadLetter(message, config, env, answer);
  } else {
    retry([message], config, answer);
  }
}

function readConfig(env) {
  const number = (value, fallback) => {
    const parsed = Number(value);
    return Number.isFinite(parsed) && parsed >= 0 ? parsed : fallback;
  };
  const config = {
    url: "",
    secret: typeof env.EVENTS_WEBHOOK_SECRET === "string" ? env.EVENTS_WEBHOOK_SECRET : "",
    retryBase: number(env.RETRY_BASE_SECONDS, 30),
    retryMax: Math.min(number(env.RETRY_MAX_SECONDS, 3600), MAX_DELAY_SECONDS),
    timeoutMs: (number(env.REQUEST_TIMEOUT_SECONDS, 30) || 30) * 1000,
    problem: "",
  };
  try {
    const base = new URL(String(env.RECONCILER_URL || ""));
    if (base.protocol !== "https:" && base.protocol !== "http:") throw new Error("not http(s)");
    config.url = new URL(EVENTS_PATH, base.href.endsWith("/") ? base.href : `${base.href}/`).href;
  } catch {
    config.problem = "RECONCILER_URL is not an http(s) URL";
  }
  if (!config.secret) config.problem = "the EVENTS_WEBHOOK_SECRET secret is not set";
  return config;
}

/** One queue message as the reconciler reads it: `{"id", "body"}`, the body JSON, a string, or base64. */
function forwarded(message) {
  let body = message.body;
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    const bytes = body instanceof ArrayBuffer ? new Uint8Array(body) : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    body = btoa(binary);
  }
  return { id: message.id, body };
}

async function sign(secret, timestamp, bytes) {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const signed = new Uint8Array(timestamp.length + 1 + bytes.length);
  signed.set(encoder.encode(`${timestamp}.`), 0);
  signed.set(bytes, timestamp.length + 1);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, signed));
  return `sha256=${[...mac].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** POST messages as one batch; the answer says what to do with them. */
async function post(messages, config) {
  const bytes = encoder.encode(JSON.stringify({ messages: messages.map(forwarded) }));
  const timestamp = Math.floor(Date.now() / 1000).toString();
  let response;
  try {
    response = await fetch(config.url, {
      method: "POST",
      body: bytes,
      headers: {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": timestamp,
        "X-Signature": await sign(config.secret, timestamp, bytes),
      },
      signal: AbortSignal.timeout(config.timeoutMs),
    });
  } catch (error) {
    const reason = error && error.name === "TimeoutError" ? "timeout" : "unreachable";
    return { accepted: false, refusesContent: false, reason };
  }
  let code = "";
  try {
    const answer = await response.json();
    code = String((answer && answer.error && answer.error.code) || "").slice(0, 40);
  } catch {
    // not JSON (a proxy's error page): the status says enough
  }
  const status = response.status;
  return {
    status,
    code,
    accepted: status >= 200 && status < 300,
    refusesContent: status === 400 || status === 413,
  };
}

function log(message, outcome, detail) {
  const line = { worker: "r2-events", id: message.id, attempts: message.attempts, outcome };
  for (const name of ["status", "code", "reason", "delaySeconds"]) {
    if (detail[name] !== undefined && detail[name] !== "") line[name] = detail[name];
  }
  console.log(JSON.stringify(line));
}

function ack(messages, answer) {
  for (const message of messages) {
    message.ack();
    log(message, "ack", answer);
  }
}

function delayFor(message, config) {
  const attempts = Math.max(1, Number(message.attempts) || 1);
  return Math.min(config.retryMax, Math.round(config.retryBase * 2 ** (attempts - 1)));
}

function retry(messages, config, detail) {
  for (const message of messages) {
    const delaySeconds = delayFor(message, config);
    message.retry({ delaySeconds });
    log(message, "retry", { ...detail, delaySeconds });
  }
}

async function deadLetter(message, config, env, answer) {
  if (!env.DEAD_LETTER_QUEUE) {
    // No producer binding: retried until the queue's max_retries moves it to its dead letter queue.
    retry([message], config, answer);
    return;
  }
  const body = message.body;
  const contentType = typeof body === "string" ? "text" : body instanceof ArrayBuffer || ArrayBuffer.isView(body) ? "bytes" : "json";
  try {
    await env.DEAD_LETTER_QUEUE.send(body, { contentType });
  } catch {
    retry([message], config, { ...answer, reason: "dead letter queue send failed" });
    return;
  }
  message.ack();
  log(message, "dead-letter", answer);
}
