// What a client in another language sees of a natomic service, using only
// proto/conversions.proto and NATS (nats.js + protobufjs): replies, error
// headers, rollback/dispatch outcomes, events and ADR-32 discovery.
// Prints TAP; run by `meson test --suite interop` through
// `natomic-lab with -- node conversions_interop.mjs PROTO`.
import { connect } from "nats";
import protobuf from "protobufjs";
import assert from "node:assert/strict";

const proto = await protobuf.load(process.argv[2]);
const Req = proto.lookupType("conversions.InchesToCmRequest");
const Rep = proto.lookupType("conversions.InchesToCmReply");
const Converted = proto.lookupType("conversions.Converted");
const nc = await connect({ servers: process.env.NATS_URL });

const events = [];
const sub = nc.subscribe("events.conversions.>");
(async () => {
  for await (const m of sub) events.push({ m, ev: Converted.decode(m.data) });
})();
await nc.flush();

let n = 0, failed = 0;
const results = [];
async function check(name, fn) {
  n++;
  try {
    await fn();
    results.push(`ok ${n} - ${name}`);
  } catch (e) {
    failed++;
    results.push(`not ok ${n} - ${name}\n  ---\n  message: ${JSON.stringify(String(e.message))}\n  ...`);
  }
}
const request = (subject, data) => nc.request(subject, data, { timeout: 3000 });
const hdr = (m, k) => (m.headers ? m.headers.get(k) : "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await check("success: 10 inches is 25.4 cm, dispatch complete, no error headers", async () => {
  const m = await request("conversions.inches_to_cm", Req.encode({ inches: 10 }).finish());
  assert.equal(hdr(m, "Nats-Service-Error-Code"), "");
  assert.equal(Rep.decode(m.data).cm, 25.4);
  assert.equal(hdr(m, "Natomic-Dispatch"), "complete");
  assert.equal(hdr(m, "Natomic-Rollback"), "none");
  assert.match(hdr(m, "Natomic-Tx"), /^[0-9a-f]{32}$/);
});

await check("failure: InvalidLength with code 422 and a complete rollback", async () => {
  const m = await request("conversions.inches_to_cm", Req.encode({ inches: -3 }).finish());
  assert.equal(hdr(m, "Nats-Service-Error-Code"), "422");
  assert.equal(hdr(m, "Natomic-Error-Type"), "InvalidLength");
  assert.match(hdr(m, "Nats-Service-Error"), /negative/);
  assert.equal(hdr(m, "Natomic-Rollback"), "complete");
  assert.equal(hdr(m, "Natomic-Dispatch"), "none");
});

await check("exactly one converted event left, for the successful call, with its tx", async () => {
  for (let i = 0; i < 20 && events.length < 1; i++) await sleep(50);
  await sleep(200);
  assert.equal(events.length, 1);
  assert.equal(events[0].m.subject, "events.conversions.converted");
  assert.equal(events[0].ev.inches, 10);
  assert.equal(events[0].ev.cm, 25.4);
  assert.match(hdr(events[0].m, "Natomic-Tx"), /^[0-9a-f]{32}$/);
});

await check("a caller's Natomic-Tx is kept", async () => {
  const { headers } = await import("nats");
  const h = headers();
  h.set("Natomic-Tx", "interop-tx-1");
  const m = await nc.request("conversions.inches_to_cm", Req.encode({ inches: 1 }).finish(), { timeout: 3000, headers: h });
  assert.equal(hdr(m, "Natomic-Tx"), "interop-tx-1");
});

await check("unknown method: 404 UnknownMethod", async () => {
  const m = await request("conversions.no_such_method", new Uint8Array());
  assert.equal(hdr(m, "Nats-Service-Error-Code"), "404");
  assert.equal(hdr(m, "Natomic-Error-Type"), "UnknownMethod");
});

await check("malformed payload: 400 MalformedPayload", async () => {
  const m = await request("conversions.inches_to_cm", new Uint8Array([0xff, 0xff, 0xff]));
  assert.equal(hdr(m, "Nats-Service-Error-Code"), "400");
  assert.equal(hdr(m, "Natomic-Error-Type"), "MalformedPayload");
});

const json = async (subject) => JSON.parse(new TextDecoder().decode((await request(subject, new Uint8Array())).data));
await check("$SRV.PING.conversions answers an ADR-32 ping_response", async () => {
  const d = await json("$SRV.PING.conversions");
  assert.equal(d.type, "io.nats.micro.v1.ping_response");
  assert.equal(d.name, "conversions");
  assert.ok(d.id && d.version);
});
await check("$SRV.INFO.conversions lists the endpoint with its protobuf types", async () => {
  const d = await json("$SRV.INFO.conversions");
  assert.equal(d.type, "io.nats.micro.v1.info_response");
  assert.equal(d.endpoints[0].subject, "conversions.inches_to_cm");
  assert.equal(d.endpoints[0].queue_group, "conversions");
  assert.equal(d.endpoints[0].metadata.request_type, "conversions.InchesToCmRequest");
  assert.equal(d.endpoints[0].metadata.reply_type, "conversions.InchesToCmReply");
});
await check("$SRV.STATS.conversions.<id> counts requests and errors", async () => {
  const id = (await json("$SRV.PING.conversions")).id;
  const d = await json(`$SRV.STATS.conversions.${id}`);
  assert.equal(d.type, "io.nats.micro.v1.stats_response");
  assert.equal(d.endpoints[0].num_requests, 4);
  assert.equal(d.endpoints[0].num_errors, 2);
  assert.equal(d.endpoints[0].data.rollbacks_run, 1);
});

await nc.close();
console.log("TAP version 14");
console.log(`1..${n}`);
for (const r of results) console.log(r);
process.exit(0);
