// Drives real Socket.io clients for the Rust end-to-end tests. Reads one JSON command per line on
// stdin and writes one JSON line per result or received event on stdout.
//
// Commands:
//   {"op":"connect","client":"a","url":"http://127.0.0.1:PORT"}          -> {"op":"connected","client":"a"}
//       WebSocket only unless "options" (socket.io-client's) say otherwise, e.g.
//       {"transports":["polling","websocket"]} to start polling and upgrade, as browsers do
//   {"op":"transport","client":"a","ref":4}  -> {"op":"transport","ref":4,"name":"polling"|"websocket"}
//   {"op":"emit","client":"a","ref":1,"event":"join_team","data":{...}} -> {"op":"ack","ref":1,"data":...}
//   {"op":"close","client":"a"}                                         -> {"op":"closed","client":"a"}
//   {"op":"stress","ref":2,"url":...,"count":N,"event":"join_team","data":{...}}
//       connects N clients one after another, each emitting `event` the moment it connects and
//       waiting for the ack (at most 5 s) before closing -> {"op":"stress","ref":2,"acked":K,"failed":[...]}
//   {"op":"tally","client":"a"}                                         -> {"op":"tallying","client":"a"}
//       from now on the client's `agent_output` events are counted here instead of written out
//       (a flood of output need not cross the pipe); its other events are written out as usual
//   {"op":"tally_get","client":"a","ref":3}
//       -> {"op":"tally","ref":3,"client":"a","agents":{"AGENT_ID":{"count":N,"firstSeq":0,
//           "lastSeq":N-1,"bytes":B,"anomalies":0,"firstAnomaly":null}}}
//       per agent: events counted, first and last seq, UTF-8 bytes of `data`, and how many seqs
//       were not the last one plus one (a gap, a duplicate or out of order), the first of them
//       as {"after":LAST,"got":SEQ}
//   {"op":"resume","client":"a","join":{"teamId":...,"token":...}}  -> {"op":"resuming","client":"a"}
//       from now on the client does what a real one does when told to `resync`: it rejoins with
//       `join` plus `since` = the last seq it got of each agent, and reports
//       {"op":"rejoined","client":"a","data":ACK} (the `resync` event is written out as usual)
// Every event a client receives: {"op":"event","client":"a","event":"agent_output","data":{...}}
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const clients = new Map();
// Per tallying client: Map agentId -> {count, firstSeq, lastSeq, bytes, anomalies, firstAnomaly}.
const tallies = new Map();
// Per client: Map agentId -> the last seq it got.
const lastSeqs = new Map();
// Per resuming client: the `join_team` data it rejoins with.
const resumers = new Map();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function connect({ client, url, options }) {
  const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true, ...options });
  clients.set(client, socket);
  socket.on("connect", () => out({ op: "connected", client }));
  socket.on("connect_error", (err) => out({ op: "connect_error", client, error: String(err && err.message) }));
  socket.on("disconnect", (reason) => out({ op: "disconnected", client, reason }));
  lastSeqs.set(client, new Map());
  socket.onAny((event, data) => {
    if (event === "agent_output" && data && typeof data.seq === "number") {
      lastSeqs.get(client).set(data.agentId, data.seq);
    }
    if (event === "resync" && resumers.has(client)) rejoin(client, socket);
    const tally = tallies.get(client);
    if (tally && event === "agent_output" && data && typeof data.seq === "number") {
      tallyOutput(tally, data);
    } else {
      out({ op: "event", client, event, data });
    }
  });
}

function rejoin(client, socket) {
  const since = Object.fromEntries(lastSeqs.get(client));
  socket.timeout(60000).emit("join_team", { ...resumers.get(client), since }, (err, reply) => {
    out({ op: "rejoined", client, data: err ? { error: "ack timeout" } : reply });
  });
}

function tallyOutput(tally, { agentId, seq, data }) {
  let t = tally.get(agentId);
  if (!t) {
    t = { count: 0, firstSeq: seq, lastSeq: null, bytes: 0, anomalies: 0, firstAnomaly: null };
    tally.set(agentId, t);
  } else if (seq !== t.lastSeq + 1) {
    t.anomalies++;
    if (!t.firstAnomaly) t.firstAnomaly = { after: t.lastSeq, got: seq };
  }
  t.count++;
  t.lastSeq = seq;
  t.bytes += typeof data === "string" ? Buffer.byteLength(data) : 0;
}

async function stress({ ref, url, count, event, data }) {
  let acked = 0;
  const failed = [];
  for (let i = 0; i < count; i++) {
    const ok = await new Promise((resolve) => {
      const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
      const timer = setTimeout(() => { socket.close(); resolve(false); }, 5000);
      socket.on("connect", () => {
        socket.emit(event, data, (reply) => {
          clearTimeout(timer);
          socket.close();
          resolve(Boolean(reply && reply.ok));
        });
      });
      socket.on("connect_error", () => { clearTimeout(timer); socket.close(); resolve(false); });
    });
    if (ok) acked++; else failed.push(i);
  }
  out({ op: "stress", ref, acked, failed });
}

const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let cmd;
  try { cmd = JSON.parse(line); } catch { out({ op: "error", error: "bad command" }); return; }
  switch (cmd.op) {
    case "connect": connect(cmd); break;
    case "emit": {
      const socket = clients.get(cmd.client);
      if (!socket) { out({ op: "error", ref: cmd.ref, error: "no such client" }); break; }
      if (cmd.noAck) { socket.emit(cmd.event, cmd.data); out({ op: "sent", ref: cmd.ref }); break; }
      socket.timeout(60000).emit(cmd.event, cmd.data, (err, reply) => {
        out(err ? { op: "ack_timeout", ref: cmd.ref } : { op: "ack", ref: cmd.ref, data: reply });
      });
      break;
    }
    case "close": {
      const socket = clients.get(cmd.client);
      if (socket) socket.close();
      clients.delete(cmd.client);
      out({ op: "closed", client: cmd.client });
      break;
    }
    case "stress": await stress(cmd); break;
    case "transport": {
      const socket = clients.get(cmd.client);
      out({ op: "transport", ref: cmd.ref, name: socket ? socket.io.engine.transport.name : null });
      break;
    }
    case "tally": {
      if (!tallies.has(cmd.client)) tallies.set(cmd.client, new Map());
      out({ op: "tallying", client: cmd.client });
      break;
    }
    case "resume": {
      resumers.set(cmd.client, cmd.join);
      out({ op: "resuming", client: cmd.client });
      break;
    }
    case "tally_get": {
      const tally = tallies.get(cmd.client) || new Map();
      out({ op: "tally", ref: cmd.ref, client: cmd.client, agents: Object.fromEntries(tally) });
      break;
    }
    default: out({ op: "error", error: "unknown op " + cmd.op });
  }
});
rl.on("close", () => { for (const s of clients.values()) s.close(); process.exit(0); });
