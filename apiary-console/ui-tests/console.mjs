// Drives the console page (/ui) in headless Chromium against three real nodes that
// apiary-node/tests/console_browser.rs started: the page loads, a wrong token is refused, the
// cards count three alive nodes, each node's charts fill, a SIGKILLed node turns to the dead
// colour, a running query is cancelled from the page, and drain from the button shows the
// node leaving, then gone. Every wait is on a condition. Screenshots go to $SCREENSHOTS.
//
// Environment: APIARY_PLAYWRIGHT (node_modules holding playwright-core), CHROMIUM, CONSOLE_URL,
// ADMIN_TOKEN, NODES (ids, comma-separated), KILL_NODE and KILL_PID, DRAIN_NODE, SCREENSHOTS.

import { createRequire } from "node:module";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run through cargo test (console_browser)`);
  return value;
};
const require = createRequire(path.join(env("APIARY_PLAYWRIGHT"), "noop.js"));
const { chromium } = require("playwright-core");

const url = env("CONSOLE_URL");
const admin = env("ADMIN_TOKEN");
const nodes = env("NODES").split(",");
const shots = env("SCREENSHOTS");
const TIMEOUT = 60_000;
const DEAD_RED = "rgb(220, 38, 38)";
const ENDLESS =
  "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100000000000) " +
  "SELECT count(*) FROM r";

let step = "starting";
const say = (what) => {
  step = what;
  console.log(`step: ${what}`);
};

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
page.setDefaultTimeout(TIMEOUT);
page.on("dialog", (dialog) => dialog.accept());
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));

const row = (id) => page.locator(`#nodes tbody tr[data-node="${id}"]`);
const stateOf = (id) => row(id).locator(".state");

try {
  say("the page loads and, without a token, says the API refused it");
  const response = await page.goto(`${url}/ui?refresh=250`);
  if (response.status() !== 200) throw new Error(`GET /ui answered ${response.status()}`);
  await page.locator("#status.error", { hasText: "401" }).waitFor();

  say("a wrong token is refused");
  await page.fill("#token", "apiary_000000000000_" + "0".repeat(64));
  await page.click("#use-token");
  await page.locator("#status.error", { hasText: "refused this token (401)" }).waitFor();

  say("with an admin token the cards count three alive nodes");
  await page.fill("#token", admin);
  await page.click("#use-token");
  await page.waitForFunction(
    (n) => document.getElementById("card-alive").textContent.startsWith(`${n} /`),
    nodes.length,
  );
  for (const id of nodes) {
    await stateOf(id).and(page.locator('[data-state="alive"]')).waitFor();
  }
  const bees = await page.textContent("#card-bees");
  if (!/^\d+ \/ [1-9]\d*$/.test(bees)) throw new Error(`bees card reads ${bees}`);

  say("each node's charts fill from the samples in its heartbeat");
  await page.waitForFunction(
    (ids) => ids.every((id) => {
      const box = document.querySelector(`.node-charts[data-node="${id}"]`);
      return box && !box.querySelector("h3").textContent.includes("(0 samples)")
        && box.querySelectorAll("polyline").length > 0;
    }),
    nodes,
  );
  await page.screenshot({ path: path.join(shots, "console.png"), fullPage: true });

  say("a SIGKILLed node turns to the dead colour");
  const killed = env("KILL_NODE");
  process.kill(Number(env("KILL_PID")), "SIGKILL");
  await stateOf(killed).and(page.locator('[data-state="dead"]')).waitFor();
  // Read in the page, in one go: the table is redrawn at every refresh, so an element
  // found a moment earlier may be gone by the time its style is read.
  const deadColour = (id) =>
    page.evaluate((id) => {
      const el = document.querySelector(`#nodes tbody tr[data-node="${id}"] .state`);
      return el && el.dataset.state === "dead" ? getComputedStyle(el).backgroundColor : null;
    }, id);
  const drawn = await page
    .waitForFunction(
      ([id, red]) => {
        const el = document.querySelector(`#nodes tbody tr[data-node="${id}"] .state`);
        return el && el.dataset.state === "dead" && getComputedStyle(el).backgroundColor === red;
      },
      [killed, DEAD_RED],
    )
    .then(() => true, () => false);
  if (!drawn) {
    throw new Error(`a dead node is drawn in ${await deadColour(killed)}, not ${DEAD_RED}`);
  }
  await page.screenshot({ path: path.join(shots, "console-dead.png"), fullPage: true });

  say("a running query is cancelled from the page");
  const running = fetch(`${url}/api/v1/sql`, {
    method: "POST",
    headers: { Authorization: `Bearer ${admin}` },
    body: ENDLESS,
  }).then((r) => r.text());
  const query = page.locator("#queries tbody tr[data-query]", { hasText: "RECURSIVE" });
  await query.waitFor();
  await page.screenshot({ path: path.join(shots, "console-query.png"), fullPage: true });
  await query.locator("button.cancel").click();
  await query.waitFor({ state: "detached" });
  const answer = await running;
  if (!answer.includes("cancelled by the console of")) {
    throw new Error(`the cancelled query answered ${answer}`);
  }

  say("drain from the button shows the node leaving, then gone");
  const drained = env("DRAIN_NODE");
  await row(drained).locator("button.drain").click();
  await stateOf(drained).and(page.locator('[data-state="leaving"]')).waitFor();
  await page.screenshot({ path: path.join(shots, "console-leaving.png"), fullPage: true });
  await row(drained).waitFor({ state: "detached" });

  if (errors.length) throw new Error(`the page raised: ${errors.join("; ")}`);
  console.log("ok");
} catch (e) {
  console.error(`failed at "${step}": ${e.message}`);
  await page.screenshot({ path: path.join(shots, "console-failure.png"), fullPage: true })
    .catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
