// The order saga driven from another language, using only proto/*.proto
// and NATS (nats.js + protobufjs): inventory, payments, orders and
// notifications. Three orders (confirmed, payment declined, out of stock)
// with their replies and error headers, stock and money conserved, exactly
// one order_created and one notification, and the barrier's answers to a
// duplicate action, a compensation before its action and the late action;
// then an idempotency key retried, and the EVENTS stream of durable mode
// (the services run in durable mode, their default).
// Prints TAP; run by `meson test --suite interop` through
// `natomic-lab with -- node saga_interop.mjs PROTO_DIR`.
import { connect, headers } from "nats";
import protobuf from "protobufjs";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";

const protoDir = process.argv[2];
// keepCase: the field names of the .proto files (order_id), not camelCase.
const proto = await new protobuf.Root().load(
  ["inventory.proto", "payments.proto", "orders.proto", "notifications.proto"].map((f) => path.join(protoDir, f)),
  { keepCase: true },
);
const T = (name) => proto.lookupType(name);
const nc = await connect({ servers: process.env.NATS_URL });

// Every method with its request and reply types, as in proto/ (and in $SRV.INFO).
const methods = {
  "inventory.restock": ["inventory.RestockRequest", "inventory.StockReply"],
  "inventory.reserve": ["inventory.ReserveRequest", "inventory.ReserveReply"],
  "inventory.release": ["inventory.ReleaseRequest", "inventory.ReleaseReply"],
  "inventory.get_stock": ["inventory.GetStockRequest", "inventory.StockReply"],
  "payments.deposit": ["payments.DepositRequest", "payments.BalanceReply"],
  "payments.charge": ["payments.ChargeRequest", "payments.ChargeReply"],
  "payments.refund": ["payments.RefundRequest", "payments.RefundReply"],
  "payments.get_balance": ["payments.GetBalanceRequest", "payments.BalanceReply"],
  "orders.create_order": ["orders.CreateOrderRequest", "orders.OrderReply"],
  "orders.get_order": ["orders.GetOrderRequest", "orders.OrderReply"],
  "notifications.list": ["notifications.ListRequest", "notifications.ListReply"],
};
// int64 fields as numbers, proto3 defaults (0, "", []) filled in.
const toObj = (type, bytes) => type.toObject(type.decode(bytes), { longs: Number, defaults: true, arrays: true });
const hdr = (m, k) => (m.headers ? m.headers.get(k) : "");

// Calls subject with a plain object; returns { m, ok, reply, code, type, message }.
// `key`: a Natomic-Idempotency-Key.
async function call(subject, fields, tx, key) {
  const [reqName, repName] = methods[subject];
  const Req = T(reqName);
  assert.equal(Req.verify(fields), null, `request for ${subject}`);
  const opts = { timeout: 10000 };
  if (tx || key) {
    opts.headers = headers();
    if (tx) opts.headers.set("Natomic-Tx", tx);
    if (key) opts.headers.set("Natomic-Idempotency-Key", key);
  }
  const m = await nc.request(subject, Req.encode(Req.fromObject(fields)).finish(), opts);
  const code = hdr(m, "Nats-Service-Error-Code");
  if (code !== "")
    return { m, ok: false, code, type: hdr(m, "Natomic-Error-Type"), message: hdr(m, "Nats-Service-Error") };
  return { m, ok: true, reply: toObj(T(repName), m.data) };
}
async function ok(subject, fields, tx, key) {
  const r = await call(subject, fields, tx, key);
  assert.ok(r.ok, `${subject}: expected success, got ${r.code} ${r.type}: ${r.message}`);
  return r;
}
async function fails(subject, fields, code, type, tx, key) {
  const r = await call(subject, fields, tx, key);
  assert.ok(!r.ok, `${subject}: expected ${code} ${type}, got success ${JSON.stringify(r.reply)}`);
  assert.equal(r.code, code, `${subject}: code (${r.type}: ${r.message})`);
  assert.equal(r.type, type, `${subject}: type (${r.message})`);
  return r;
}
const stock = async (sku) => (await ok("inventory.get_stock", { sku })).reply;
const balance = async (customer) => (await ok("payments.get_balance", { customer })).reply;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const newTx = () => randomBytes(16).toString("hex");

// Every order_created, with its headers.
const OrderCreated = T("orders.OrderCreated");
const events = [];
const sub = nc.subscribe("events.orders.>");
(async () => {
  for await (const m of sub) events.push({ m, ev: toObj(OrderCreated, m.data) });
})();
await nc.flush();

let n = 0, failed = 0, bailed = false;
const results = [];
async function check(name, fn) {
  n++;
  if (bailed) {
    results.push(`ok ${n} - ${name} # SKIP an earlier step failed`);
    return;
  }
  try {
    await fn();
    results.push(`ok ${n} - ${name}`);
  } catch (e) {
    failed++;
    results.push(`not ok ${n} - ${name}\n  ---\n  message: ${JSON.stringify(String(e.message))}\n  ...`);
  }
}
// A step the later ones build on: when it fails, they are skipped rather than failing confusingly.
async function step(name, fn) {
  const before = failed;
  await check(name, fn);
  if (failed > before) bailed = true;
}

// Names of this run, so the checks hold on any database.
const run = randomBytes(4).toString("hex");
const sku = `book-${run}`, ann = `ann-${run}`, bob = `bob-${run}`;
const state = {};

await step("restock and deposit: the seed data, read back by get_stock and get_balance", async () => {
  assert.deepEqual(await stock(sku), { sku, available: 0, reserved: 0 });
  const r = await ok("inventory.restock", { sku, qty: 5 });
  assert.deepEqual(r.reply, { sku, available: 5, reserved: 0 });
  assert.deepEqual((await ok("payments.deposit", { customer: ann, amount: 5000 })).reply,
    { customer: ann, balance: 5000, charged: 0 });
  assert.deepEqual((await ok("payments.deposit", { customer: bob, amount: 100 })).reply,
    { customer: bob, balance: 100, charged: 0 });
  assert.deepEqual(await stock(sku), { sku, available: 5, reserved: 0 });
  assert.deepEqual(await balance(ann), { customer: ann, balance: 5000, charged: 0 });
});

await step("a confirmed order: reply confirmed, dispatch complete, no rollback", async () => {
  const r = await ok("orders.create_order", { customer: ann, sku, qty: 2, amount: 3000 });
  assert.match(r.reply.order_id, /^ord-[0-9a-f]{32}$/);
  assert.equal(r.reply.status, "confirmed");
  assert.deepEqual({ ...r.reply, order_id: "" }, { order_id: "", status: "confirmed", customer: ann, sku, qty: 2, amount: 3000 });
  assert.equal(hdr(r.m, "Natomic-Dispatch"), "complete");
  assert.equal(hdr(r.m, "Natomic-Rollback"), "none");
  assert.match(hdr(r.m, "Natomic-Tx"), /^[0-9a-f]{32}$/);
  state.confirmed = r.reply.order_id;
  state.confirmedTx = hdr(r.m, "Natomic-Tx");
  assert.deepEqual(await stock(sku), { sku, available: 3, reserved: 2 });
  assert.deepEqual(await balance(ann), { customer: ann, balance: 2000, charged: 3000 });
});

await step("payment declined: 422 PaymentDeclined, rollback complete, the reservation released", async () => {
  const r = await fails("orders.create_order", { customer: bob, sku, qty: 1, amount: 1500 }, "422", "PaymentDeclined");
  assert.equal(hdr(r.m, "Natomic-Rollback"), "complete");
  assert.equal(hdr(r.m, "Natomic-Dispatch"), "none");
  assert.match(r.message, /insufficient balance/);
  const id = r.message.match(/^order (ord-[0-9a-f]{32}): /);
  assert.ok(id, `the message names the order: ${r.message}`);
  state.declined = id[1];
  assert.deepEqual(await stock(sku), { sku, available: 3, reserved: 2 });
  assert.deepEqual(await balance(bob), { customer: bob, balance: 100, charged: 0 });
});

await step("out of stock: 422 OutOfStock, rollback complete, nothing charged", async () => {
  const r = await fails("orders.create_order", { customer: ann, sku, qty: 10, amount: 100 }, "422", "OutOfStock");
  assert.equal(hdr(r.m, "Natomic-Rollback"), "complete");
  assert.match(r.message, /only 3 of .* available, 10 requested/);
  const id = r.message.match(/^order (ord-[0-9a-f]{32}): /);
  assert.ok(id, `the message names the order: ${r.message}`);
  state.outOfStock = id[1];
  assert.deepEqual(await stock(sku), { sku, available: 3, reserved: 2 });
  assert.deepEqual(await balance(ann), { customer: ann, balance: 2000, charged: 3000 });
});

await check("get_order: one confirmed, the two failed orders cancelled", async () => {
  for (const [id, status] of [[state.confirmed, "confirmed"], [state.declined, "cancelled"], [state.outOfStock, "cancelled"]]) {
    const r = await ok("orders.get_order", { order_id: id });
    assert.equal(r.reply.order_id, id);
    assert.equal(r.reply.status, status, `order ${id}`);
  }
  const bobs = await ok("orders.get_order", { order_id: state.declined });
  assert.deepEqual({ ...bobs.reply, order_id: "" }, { order_id: "", status: "cancelled", customer: bob, sku, qty: 1, amount: 1500 });
});

await check("conservation: available + reserved == restocked, balance + charged == deposits", async () => {
  const s = await stock(sku);
  assert.equal(s.available + s.reserved, 5);
  assert.ok(s.available >= 0 && s.reserved >= 0);
  const a = await balance(ann), b = await balance(bob);
  assert.equal(a.balance + a.charged, 5000);
  assert.equal(b.balance + b.charged, 100);
  // What is charged is what the one confirmed order cost; what is reserved, its quantity.
  assert.equal(a.charged + b.charged, 3000);
  assert.equal(s.reserved, 2);
});

await check("exactly one events.orders.order_created, for the confirmed order", async () => {
  for (let i = 0; i < 40 && events.length < 1; i++) await sleep(50);
  await sleep(300); // room for an event that should not come
  assert.equal(events.length, 1, `order_created events: ${events.map((e) => e.ev.order_id).join(", ")}`);
  const { m, ev } = events[0];
  assert.equal(m.subject, "events.orders.order_created");
  assert.deepEqual(ev, { order_id: state.confirmed, customer: ann, sku, qty: 2, amount: 3000 });
  assert.equal(hdr(m, "Natomic-Event-Type"), "order_created");
  assert.match(hdr(m, "Natomic-Event-Id"), /^[0-9a-f]{32}$/);
  assert.equal(hdr(m, "Nats-Msg-Id"), hdr(m, "Natomic-Event-Id"));
  assert.equal(hdr(m, "Natomic-Tx"), state.confirmedTx);
});

await check("notifications.list: one notification for ann (repeated field), none for bob", async () => {
  let list = [];
  for (let i = 0; i < 40; i++) {
    list = (await ok("notifications.list", { customer: ann })).reply.notifications;
    if (list.length > 0) break;
    await sleep(50);
  }
  assert.equal(list.length, 1);
  const note = list[0];
  assert.equal(note.order_id, state.confirmed);
  assert.equal(note.customer, ann);
  assert.equal(note.event_id, events.length > 0 ? hdr(events[0].m, "Natomic-Event-Id") : "(no event)");
  assert.ok(note.text.includes(state.confirmed) && note.text.includes(sku), `text: ${note.text}`);
  assert.notEqual(note.created_at, "");
  assert.deepEqual((await ok("notifications.list", { customer: bob })).reply, { notifications: [] });
});

await check("a duplicate reserve in the same Natomic-Tx is applied once (outcome duplicate)", async () => {
  const tx = newTx(), order_id = `dup-${run}`;
  const first = await ok("inventory.reserve", { order_id, sku, qty: 1 }, tx);
  assert.equal(hdr(first.m, "Natomic-Tx"), tx);
  assert.deepEqual(first.reply, { order_id, outcome: "executed", available: 2 });
  const again = await ok("inventory.reserve", { order_id, sku, qty: 1 }, tx);
  assert.deepEqual(again.reply, { order_id, outcome: "duplicate", available: 2 });
  assert.deepEqual(await stock(sku), { sku, available: 2, reserved: 3 });
  // Its compensation gives the one unit back, once.
  assert.deepEqual((await ok("inventory.release", { order_id }, tx)).reply, { order_id, outcome: "executed", released: 1 });
  assert.deepEqual((await ok("inventory.release", { order_id }, tx)).reply, { order_id, outcome: "duplicate", released: 0 });
  assert.deepEqual(await stock(sku), { sku, available: 3, reserved: 2 });
});

await check("release before reserve in one tx: null_compensation, then the late reserve gets TransactionAborted", async () => {
  const tx = newTx(), order_id = `late-${run}`;
  const rel = await ok("inventory.release", { order_id }, tx);
  assert.deepEqual(rel.reply, { order_id, outcome: "null_compensation", released: 0 });
  const late = await fails("inventory.reserve", { order_id, sku, qty: 1 }, "422", "TransactionAborted", tx);
  assert.match(late.message, new RegExp(`order ${order_id} was already released`));
  assert.equal(hdr(late.m, "Natomic-Tx"), tx);
  assert.deepEqual(await stock(sku), { sku, available: 3, reserved: 2 });
});

await check("payments too: a duplicate charge is applied once; a refund before its charge refuses the charge", async () => {
  const tx = newTx(), order_id = `pay-${run}`;
  assert.deepEqual((await ok("payments.charge", { order_id, customer: ann, amount: 500 }, tx)).reply,
    { order_id, outcome: "executed", balance: 1500 });
  assert.deepEqual((await ok("payments.charge", { order_id, customer: ann, amount: 500 }, tx)).reply,
    { order_id, outcome: "duplicate", balance: 1500 });
  assert.deepEqual((await ok("payments.refund", { order_id }, tx)).reply, { order_id, outcome: "executed", refunded: 500 });
  assert.deepEqual(await balance(ann), { customer: ann, balance: 2000, charged: 3000 });

  const tx2 = newTx(), late = `pay-late-${run}`;
  assert.deepEqual((await ok("payments.refund", { order_id: late }, tx2)).reply,
    { order_id: late, outcome: "null_compensation", refunded: 0 });
  await fails("payments.charge", { order_id: late, customer: ann, amount: 500 }, "422", "TransactionAborted", tx2);
  assert.deepEqual(await balance(ann), { customer: ann, balance: 2000, charged: 3000 });
});

await check("bad input and unknown orders: 400 InvalidRequest, 422 UnknownOrder", async () => {
  const r = await fails("orders.create_order", { customer: ann, sku, qty: 0, amount: 100 }, "400", "InvalidRequest");
  assert.equal(hdr(r.m, "Natomic-Rollback"), "none");
  await fails("orders.get_order", { order_id: `ord-nope-${run}` }, "422", "UnknownOrder");
  assert.deepEqual(await stock(sku), { sku, available: 3, reserved: 2 });
});

await check("Natomic-Idempotency-Key: a retry replays the first order (Natomic-Replayed), runs nothing; another body under the key is refused", async () => {
  const pen = `pen-${run}`, cy = `cy-${run}`, key = `checkout-${run}`;
  await ok("inventory.restock", { sku: pen, qty: 4 });
  await ok("payments.deposit", { customer: cy, amount: 1000 });
  const first = await ok("orders.create_order", { customer: cy, sku: pen, qty: 1, amount: 250 }, undefined, key);
  assert.equal(first.reply.status, "confirmed");
  assert.equal(hdr(first.m, "Natomic-Replayed"), "");
  const again = await ok("orders.create_order", { customer: cy, sku: pen, qty: 1, amount: 250 }, undefined, key);
  assert.equal(hdr(again.m, "Natomic-Replayed"), "true");
  assert.deepEqual(again.reply, first.reply);
  assert.equal(hdr(again.m, "Natomic-Tx"), hdr(first.m, "Natomic-Tx"));
  assert.deepEqual(await stock(pen), { sku: pen, available: 3, reserved: 1 });
  assert.deepEqual(await balance(cy), { customer: cy, balance: 750, charged: 250 });
  const other = await fails("orders.create_order", { customer: cy, sku: pen, qty: 2, amount: 500 }, "400",
    "IdempotencyKeyReused", undefined, key);
  assert.match(other.message, /was used for another create_order request/);
  assert.deepEqual(await stock(pen), { sku: pen, available: 3, reserved: 1 });
});

await check("durable mode from outside: the EVENTS stream holds each order_created once, with its Nats-Msg-Id", async () => {
  // Two confirmed orders in this run: the first one and the idempotent one.
  for (let i = 0; i < 40 && events.length < 2; i++) await sleep(50);
  const ids = new Set(events.map((e) => hdr(e.m, "Nats-Msg-Id")));
  assert.equal(ids.size, 2, `distinct order_created ids seen: ${[...ids].join(", ")}`);
  const jsm = await nc.jetstreamManager();
  const si = await jsm.streams.info("EVENTS", { subjects_filter: "events.orders.order_created" });
  assert.deepEqual(si.config.subjects, ["events.>"]);
  // `natomic-lab with` starts a fresh server: the stream holds this run's events only.
  const inStream = si.state.subjects ? si.state.subjects["events.orders.order_created"] : si.state.messages;
  assert.equal(inStream, ids.size, "order_created messages in EVENTS");
  const last = await jsm.streams.getMessage("EVENTS", { last_by_subj: "events.orders.order_created" });
  assert.ok(ids.has(last.header.get("Nats-Msg-Id")), "the stream's last order_created is one the tap saw");
});

await check("$SRV.INFO names each method's protobuf types as proto/ does", async () => {
  for (const service of ["inventory", "payments", "orders", "notifications"]) {
    const m = await nc.request(`$SRV.INFO.${service}`, new Uint8Array(), { timeout: 3000 });
    const d = JSON.parse(new TextDecoder().decode(m.data));
    assert.equal(d.name, service);
    for (const [subject, [req, rep]] of Object.entries(methods).filter(([s]) => s.startsWith(`${service}.`))) {
      const ep = d.endpoints.find((e) => e.subject === subject);
      assert.ok(ep, `${service} has no endpoint ${subject}`);
      assert.equal(ep.metadata.request_type, req);
      assert.equal(ep.metadata.reply_type, rep);
    }
  }
});

await nc.close();
console.log("TAP version 14");
console.log(`1..${n}`);
for (const r of results) console.log(r);
process.exit(0);
