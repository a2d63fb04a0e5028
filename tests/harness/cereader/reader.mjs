// An HTTP subscriber that reads every POST with the CloudEvents JavaScript SDK (cloudevents 10.0.0),
// so tests judge what the gateway client delivers with a reader that shares no code with it.
//
//   node reader.mjs <port> [status]      listens on 127.0.0.1:<port>, prints "ready <port>" once listening
//
//   POST <any path>       recorded; answered with the current status (default 200, or [status])
//   GET /records          every record so far, a JSON array
//   DELETE /records       forget them
//   PUT /status/<code>    answer later POSTs with <code> (200-599)
//   PUT /body/<as>        hand the SDK the body as a "string" (the default) or a "buffer"
//
// A record: { path, target, method, headers: [[name, value], ...] as sent, body_b64, ok, error, events }.
// `ok` is false (and `error` says why) when HTTP.toEvent threw; then `events` is empty. An event holds
// every attribute the SDK produced except its data (id, source, type, specversion, time, subject,
// datacontenttype, dataschema, extensions...), then how the SDK presented the data, then whether
// event.validate() passed (`valid`, `validation_error`). A batch request gives one event per element.
//
// data_kind: "none" (data undefined), "string" (`data`), "json" (`data`: a parsed object, array,
// number, boolean or null), "bytes" (`data_b64`, and `data_class`: Buffer, Uint8Array, Uint32Array).
//
// What cloudevents 10.0.0's HTTP.toEvent does, found by trying it:
// - The mode comes from the headers: Content-Type starting "application/cloudevents-batch+json" is
//   batch, starting "application/cloudevents" is structured, else a ce-id header makes it binary, else
//   it throws "no cloud event detected" (so a binary request without ce-id is ok: false).
// - The body is handed over as a UTF-8 string by default, as the SDK's own express example does. As a
//   Buffer, structured mode breaks: the SDK spreads the Buffer's bytes as attributes and reports an
//   event with no id, source or type. Buffer mode is there for binary-mode byte checks only.
// - Binary mode, body as a string: the data is parsed as JSON only when Content-Type is exactly
//   "application/json" or "application/json; charset=utf-8" (not "application/json;charset=utf-8").
//   Then an object or array becomes "json"; a body that does not start with `{`, `[` or `"` is
//   wrapped in quotes first, so `42`, `true` or `hello` become the "string" "42", "true", "hello";
//   invalid JSON that starts with `{` throws (ok: false); an empty body stays the "string" "".
//   text/plain, application/octet-stream, any other type and no Content-Type: the "string" as
//   decoded from UTF-8 (invalid bytes become U+FFFD: compare body_b64 for exact bytes).
// - Binary mode, body as a Buffer: the data is that Buffer ("bytes", data_class Buffer) for every
//   Content-Type, application/json included: nothing is parsed.
// - Structured mode: "data" is taken as the JSON value it is ("json", or "string" for a JSON string,
//   which is never parsed again, even under application/json); but a falsy "data" (0, false, "",
//   null) is dropped: "none". "data_base64" gives "bytes" with data_class Uint32Array (one byte per
//   32-bit element; data_b64 here holds those bytes). The Content-Type must be exactly
//   "application/cloudevents+json" or "application/cloudevents+json; charset=utf-8": without the
//   space it throws "invalid content type".
// - Batch mode: each element becomes a CloudEvent built strictly: "data" as is (null is "json"),
//   "data_base64" as "bytes" (Uint8Array); an element without id gets a generated UUID; one invalid
//   element (no source, say) makes the whole request ok: false.
// - In every mode: a missing time is set to the time of reading; a time is rewritten to ISO 8601
//   in UTC with milliseconds ("2024-05-01T12:00:00Z" -> "2024-05-01T12:00:00.000Z"), and one that
//   does not parse becomes the time of reading. Binary-mode extensions are the remaining ce-*
//   headers, lower-cased, their values strings. toEvent does not validate (except batch elements):
//   a missing source or type, or an extension name with capitals, shows only as valid: false.

import http from "node:http";
import { types } from "node:util";

import { HTTP } from "cloudevents";

const MAX_BODY = 32 * 1024 * 1024;
const BODY_AS = new Set(["string", "buffer"]);

const port = Number.parseInt(process.argv[2] ?? "", 10);
let status = Number.parseInt(process.argv[3] ?? "200", 10);
let bodyAs = "string";
let records = [];

if (!Number.isInteger(port) || port <= 0 || port > 65535 || !isStatus(status)) {
  console.error("usage: node reader.mjs <port> [status]");
  process.exit(2);
}

function isStatus(code) {
  return Number.isInteger(code) && code >= 200 && code <= 599;
}

function errorText(err) {
  const message = err instanceof Error ? err.message : String(err);
  const details = Array.isArray(err?.errors) && err.errors.length ? ` ${JSON.stringify(err.errors)}` : "";
  return `${message}${details}`;
}

function presentData(data) {
  if (data === undefined) {
    return { data_kind: "none" };
  }
  if (types.isTypedArray(data)) {
    const bytes = Buffer.from(data); // element by element: a Uint32Array of byte values gives those bytes
    return { data_kind: "bytes", data_class: data.constructor.name, data_b64: bytes.toString("base64") };
  }
  if (typeof data === "string") {
    return { data_kind: "string", data };
  }
  if (data === null || typeof data === "object" || typeof data === "number" || typeof data === "boolean") {
    return { data_kind: "json", data };
  }
  return { data_kind: "other", data_class: typeof data, data: String(data) };
}

function presentEvent(event) {
  const attributes = {};
  for (const [name, value] of Object.entries(event)) {
    if (name !== "data" && name !== "data_base64" && value !== undefined) {
      attributes[name] = value;
    }
  }
  let validation = { valid: true };
  try {
    if (event.validate() !== true) {
      validation = { valid: false, validation_error: "validate() returned false" };
    }
  } catch (err) {
    validation = { valid: false, validation_error: errorText(err) };
  }
  return { ...attributes, ...presentData(event.data), ...validation };
}

function read(headers, raw) {
  try {
    const body = bodyAs === "buffer" ? raw : raw.toString("utf8");
    const result = HTTP.toEvent({ headers, body });
    const events = (Array.isArray(result) ? result : [result]).map(presentEvent);
    return { ok: true, events };
  } catch (err) {
    return { ok: false, error: errorText(err), events: [] };
  }
}

function headerPairs(rawHeaders) {
  const pairs = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    pairs.push([rawHeaders[i], rawHeaders[i + 1]]);
  }
  return pairs;
}

function jsonSafe(record) {
  try {
    return JSON.parse(JSON.stringify(record));
  } catch (err) {
    return { ...record, ok: false, error: `record not JSON-serialisable: ${errorText(err)}`, events: [] };
  }
}

class BodyTooLarge extends Error {}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) {
      throw new BodyTooLarge(`body over ${MAX_BODY} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function answer(res, code, body = "", contentType = "text/plain") {
  res.writeHead(code, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

async function handle(req, res) {
  const target = req.url ?? "/";
  const path = target.split("?", 1)[0];
  const request = { path, target, method: req.method, headers: headerPairs(req.rawHeaders) };
  let raw;
  try {
    raw = await readBody(req);
  } catch (err) {
    const error = `body not read: ${errorText(err)}`;
    if (req.method === "POST") {
      records.push({ ...request, body_b64: "", ok: false, error, events: [] });
    }
    answer(res, err instanceof BodyTooLarge ? 413 : 400, error);
    return;
  }
  if (req.method === "POST") {
    records.push(jsonSafe({ ...request, body_b64: raw.toString("base64"), ...read(req.headers, raw) }));
    answer(res, status);
  } else if (req.method === "GET" && path === "/records") {
    answer(res, 200, JSON.stringify(records), "application/json");
  } else if (req.method === "DELETE" && path === "/records") {
    records = [];
    answer(res, 204);
  } else if (req.method === "PUT" && path.startsWith("/status/")) {
    const code = Number(path.slice("/status/".length));
    if (!isStatus(code)) {
      answer(res, 400, "status must be an integer from 200 to 599");
      return;
    }
    status = code;
    answer(res, 204);
  } else if (req.method === "PUT" && path.startsWith("/body/")) {
    const as = path.slice("/body/".length);
    if (!BODY_AS.has(as)) {
      answer(res, 400, "body is handed over as a string or a buffer");
      return;
    }
    bodyAs = as;
    answer(res, 204);
  } else {
    answer(res, 405, "POST anything; GET or DELETE /records; PUT /status/<code> or /body/<string|buffer>");
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(`request failed: ${errorText(err)}`);
    try {
      if (!res.headersSent) {
        answer(res, 500, errorText(err));
      } else {
        res.destroy();
      }
    } catch {
      // the socket is gone: nothing left to answer
    }
  });
});

server.on("clientError", (err, socket) => {
  console.error(`malformed request: ${errorText(err)}`);
  if (socket.writable) {
    socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  } else {
    socket.destroy();
  }
});

process.on("uncaughtException", (err) => console.error(`uncaught: ${errorText(err)}`));
process.on("unhandledRejection", (err) => console.error(`unhandled: ${errorText(err)}`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

server.on("error", (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${errorText(err)}`);
  process.exit(1);
});
server.listen(port, "127.0.0.1", () => console.log(`ready ${port}`));
