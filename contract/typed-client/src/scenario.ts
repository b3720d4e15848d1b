// A client developer's first program against oO, typed from the live /openapi.json: sign in,
// send one signal of every kind, ask for a tip, react to it, read my profile, export my data.
// It must compile under `tsc --strict` (contract/run) and exit 0 against a running server.
import createClient from "openapi-fetch";
import type { components, paths } from "./oo.js";

type Signal = components["schemas"]["Signal"];

const base = process.env.OO_BASE;
if (!base) throw new Error("OO_BASE must name the server, e.g. http://127.0.0.1:8080");

function fail(what: string, detail: unknown): never {
  console.error(`typed client: ${what}:`, JSON.stringify(detail));
  process.exit(1);
}

const anonymous = createClient<paths>({ baseUrl: base });
const login = await anonymous.POST("/auth/dev-login", {
  body: { email: `typed-client-${Date.now()}@example.org` },
});
if (!login.data) fail("dev-login", login.error);
const token: string = login.data.token;
const oo = createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${token}` } });

const now = new Date();
const at = (minutes: number): string => new Date(now.getTime() + minutes * 60_000).toISOString();
const signals: Signal[] = [
  {
    kind: "task",
    id: "t-1",
    occurred_at: at(0),
    data: { source: "manual", external_id: "task 1", title: "Water the basil", priority: 3, completed: false, due: at(120) },
  },
  { kind: "habit", id: "h-1", occurred_at: at(0), data: { name: "Stretch", done: true } },
  { kind: "calendar", id: "c-1", occurred_at: at(0), data: { title: "Stand-up", start: at(30), end: at(45) } },
  { kind: "mood", id: "m-1", occurred_at: at(0), data: { score: 1, note: "rested" } },
  { kind: "context", id: "x-1", occurred_at: at(0), data: { place: "home", activity: "reading", time_zone: "Europe/Paris" } },
];
const sent = await oo.POST("/signals", { body: { signals } });
if (!sent.data) fail("signals", sent.error);
if (sent.data.accepted !== signals.length) fail("signals accepted", sent.data);

// A tip, waiting until the projections have seen the signals ("not now" is a 204: ask again).
let tip: components["schemas"]["TipView"] | undefined;
for (let i = 0; i < 50 && !tip; i++) {
  const r = await oo.POST("/recommend", { body: { min_position: sent.data.position, context: { place: "home", mood: 1 } } });
  if (r.error) fail("recommend", r.error);
  tip = r.data?.tip;
}
if (!tip) fail("recommend", "fifty answers of 'not now'");

const reacted = await oo.POST("/feedback", { body: { tip_id: tip.id, reaction: "helpful" } });
if (!reacted.data) fail("feedback", reacted.error);

const me = await oo.GET("/me");
if (!me.data) fail("me", me.error);
if (!me.data.email.startsWith("typed-client-")) fail("me email", me.data);

const exported = await oo.GET("/me/export");
if (!exported.data) fail("export", exported.error);
const kinds = new Set(exported.data.events.map((e) => e.event_type));
for (const needed of ["UserRegistered", "SignalRecorded", "TipServed"]) {
  if (!kinds.has(needed)) fail(`export lacks ${needed}`, [...kinds]);
}

// A refusal is typed too: a problem with a stable code.
const refused = await oo.POST("/feedback", { body: { tip_id: "00000000-0000-4000-8000-000000000000", reaction: "done" } });
if (refused.response.status !== 404 || refused.error?.code !== "not_found") fail("unknown tip", refused.error);

console.log(`typed client: signed in, ${signals.length} signals, tip ${tip.kind} "${tip.title}", reacted, exported ${exported.data.events.length} events`);
