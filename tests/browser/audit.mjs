// Drives the compliance officer's audit page in headless Chromium: signs in with
// an auditor token, checks the session cookie and the CSRF defence, searches a
// user whose username and user agent are script injections (nothing may run, the
// literal text must show), the sign-in chart, the integrity panel, a CSV export,
// and signs out. Any CSP violation, page error or dialog fails the run.
// Usage: node audit.mjs CHROMIUM BASE_URL AUDITOR_TOKEN EVIL_USERNAME EVIL_USER_AGENT SCREENSHOT_DIR
// Prints progress lines and "audit page: ok"; exits 1 with a message on failure.
import { chromium } from "playwright-core";
import { readFile } from "node:fs/promises";
import path from "node:path";

const args = process.argv.slice(2);
if (args.length < 6) {
  console.error("usage: node audit.mjs CHROMIUM BASE_URL AUDITOR_TOKEN EVIL_USERNAME EVIL_USER_AGENT SCREENSHOT_DIR");
  process.exit(2);
}
const [executablePath, rawBase, token, evilUsername, evilUserAgent, shots] = args;
const baseUrl = rawBase.replace(/\/+$/, "");
const TIMEOUT = 10_000;
const COOKIE = "authlog_audit";

const cspViolations = [];
const pageErrors = [];
const dialogs = [];
const consoleLines = [];

function step(text) {
  console.log(`audit page: ${text}`);
}

class Failure extends Error {}

function fail(text) {
  throw new Failure(text);
}

function check(cond, text) {
  if (!cond) fail(text);
}

// Fails on anything the listeners recorded so far.
function checkListeners(where) {
  if (dialogs.length) fail(`a dialog opened (${where}), so injected script ran: ${JSON.stringify(dialogs)}`);
  if (pageErrors.length) fail(`page errors (${where}): ${pageErrors.join(" | ")}`);
  if (cspViolations.length) fail(`Content Security Policy violations (${where}): ${cspViolations.join(" | ")}`);
}

// RFC 4180 CSV: rows of cells (quoted cells may hold commas, quotes, newlines).
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        cell += c;
      }
    } else if (c === '"') {
      quoted = true;
    } else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\r" && text[i + 1] === "\n") {
      // the "\n" ends the row
    } else if (c === "\n") {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else {
      cell += c;
    }
  }
  if (cell !== "" || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let page;
let code = 0;
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  // A second net for CSP violations: the DOM event, reported through the console.
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`Content Security Policy violation event: ${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page = await context.newPage();
  page.on("dialog", (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on("console", (m) => {
    const text = m.text();
    consoleLines.push(`[${m.type()}] ${text}`);
    if (/Content Security Policy/i.test(text)) cspViolations.push(text);
  });
  page.on("pageerror", (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));

  // 2. The sign-in page, then the app.
  step("opening the sign-in page");
  await page.goto(`${baseUrl}/admin/audit/ui`);
  await page.waitForSelector("#token", { timeout: TIMEOUT });
  check(await page.locator('form input[type="hidden"][name="csrf"]').count() === 1, "the sign-in form has no hidden csrf field");
  await page.screenshot({ path: `${shots}/audit-login.png` });
  await page.fill("#token", token);
  await page.click("#sign-in");
  await page.waitForSelector("#whoami", { timeout: TIMEOUT });
  const who = (await page.textContent("#whoami")) ?? "";
  check(who.trim() !== "", "#whoami is empty after signing in");
  step(`signed in as ${who.trim()}`);
  checkListeners("after signing in");

  // 3. The session cookie is HttpOnly and SameSite=Strict; nothing in web storage.
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === COOKIE);
  check(session, `no ${COOKIE} cookie after signing in (cookies: ${cookies.map((c) => c.name).join(", ") || "none"})`);
  check(session.httpOnly === true, `the ${COOKIE} cookie is not HttpOnly`);
  check(session.sameSite === "Strict", `the ${COOKIE} cookie is SameSite=${session.sameSite}, not Strict`);
  const stored = await page.evaluate(() => localStorage.length + sessionStorage.length);
  check(stored === 0, `the page keeps ${stored} items in localStorage/sessionStorage`);
  const docCookie = await page.evaluate(() => document.cookie);
  check(!docCookie.includes(COOKIE), `document.cookie shows the session cookie: ${docCookie}`);
  step("session cookie is HttpOnly, SameSite=Strict, web storage empty");

  // 4. The API refuses a request without the CSRF header.
  const without = await page.evaluate(async () =>
    (await fetch("/admin/audit/events?limit=1", { credentials: "same-origin" })).status);
  // 403, not 401: the cookie was sent and the missing header is what refused it.
  check(without === 403, `a fetch without the CSRF header answered ${without}, not 403`);
  const withHeader = await page.evaluate(async () => {
    const csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
    return (await fetch("/admin/audit/events?limit=1", { credentials: "same-origin", headers: { "x-csrf-token": csrf } })).status;
  });
  check(withHeader === 200, `a fetch with the CSRF header answered ${withHeader}, not 200`);
  step(`CSRF: without the header ${without}, with it ${withHeader}`);

  // 5. A user search with an injected username and user agent.
  step("searching the user");
  await page.fill("#user", evilUsername);
  const [history] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/admin/audit/users/") && r.url().includes("/history"), { timeout: TIMEOUT }),
    page.click("#search-go"),
  ]);
  check(history.status() === 200, `the history request answered ${history.status()}`);
  await page.waitForSelector("#timeline tr.entry", { timeout: TIMEOUT });
  const rows = await page.locator("#timeline tr.entry").count();
  const failures = await page.locator("#timeline tr.entry.failure").count();
  check(failures >= 1, `no row has class failure among ${rows} rows`);
  const title = (await page.textContent("#timeline-title")) ?? "";
  check(title.includes(evilUsername), `#timeline-title does not show the username literally: ${JSON.stringify(title)}`);
  const table = (await page.textContent("#timeline")) ?? "";
  check(table.includes(evilUserAgent), "the timeline does not show the user agent literally");
  const imgs = await page.evaluate(() => ({
    x: document.querySelectorAll('img[src="x"]').length,
    inTimeline: document.querySelectorAll("#timeline img").length,
    all: Array.from(document.images).map((i) => i.getAttribute("src")),
  }));
  check(imgs.x === 0 && imgs.inTimeline === 0, `injected markup became elements: ${JSON.stringify(imgs)}`);
  check(!imgs.all.some((s) => s && (s === "x" || s.endsWith("/x"))), `an injected img exists: ${JSON.stringify(imgs.all)}`);
  checkListeners("after the user search");
  step(`timeline: ${rows} rows, ${failures} failures, injected text shown literally`);

  // 6. The chart.
  await page.waitForSelector("#chart svg rect.bar-fail", { state: "attached", timeout: TIMEOUT });
  await page.waitForFunction(() => /\d+ succeeded, \d+ failed/.test(document.getElementById("chart-totals").textContent),
    null, { timeout: TIMEOUT });
  const totals = (await page.textContent("#chart-totals")) ?? "";
  const m = /(\d+) succeeded, (\d+) failed/.exec(totals);
  check(m && Number(m[2]) >= 1, `#chart-totals shows no failed sign-in: ${JSON.stringify(totals)}`);
  step(`chart: ${totals}`);

  // 7. Integrity: the automatic verification passed and a checkpoint is shown.
  await page.waitForFunction(() => {
    const r = document.getElementById("verify-result");
    return r.classList.contains("ok") || r.classList.contains("bad");
  }, null, { timeout: TIMEOUT });
  const verdict = (await page.evaluate(() => {
    const r = document.getElementById("verify-result");
    const h = r.querySelector(".headline");
    return (h || r).textContent;
  })) ?? "";
  if (await page.locator("#verify-result.ok").count() !== 1) {
    fail(`the verification did not pass: ${(await page.textContent("#verify-result")) ?? ""}`);
  }
  const hasSize = () => page.evaluate(() => /Tree size\s*\d+/.test(document.getElementById("checkpoint").textContent));
  if (!(await hasSize())) {
    // The first checkpoint may have been signed after the page loaded: reload the panel.
    await page.click("#verify");
    await page.waitForFunction(() => /Tree size\s*\d+/.test(document.getElementById("checkpoint").textContent),
      null, { timeout: TIMEOUT }).catch(() => {});
  }
  const cp = (await page.textContent("#checkpoint")) ?? "";
  check(/Tree size\s*\d+/.test(cp), `#checkpoint shows no tree size: ${JSON.stringify(cp)}`);
  step(`integrity (start-up verification): ${verdict.trim()}`);
  // A fresh verification of the whole log, on request.
  const [fresh] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/admin/audit/verify"), { timeout: TIMEOUT }),
    page.click("#verify"),
  ]);
  check(fresh.status() === 200, `the verification request answered ${fresh.status()}`);
  await page.waitForSelector("#verify-result.ok", { timeout: TIMEOUT });
  step("integrity: verified again on request");

  // 8. A CSV export of the same search.
  await page.selectOption("#export-format", "csv");
  const [dl] = await Promise.all([
    page.waitForEvent("download", { timeout: TIMEOUT }),
    page.click("#export"),
  ]);
  const name = dl.suggestedFilename();
  check(/^authlog-audit-\d{8}\.csv$/.test(name), `the download is named ${name}`);
  const file = path.join(shots, name);
  await dl.saveAs(file);
  const failure = await dl.failure();
  check(failure === null, `the download failed: ${failure}`);
  const csv = (await readFile(file, "utf8")).replace(/^\uFEFF/, "");
  check(csv.startsWith("seq,position,time,type"), `the CSV starts with ${JSON.stringify(csv.slice(0, 60))}`);
  const table2 = parseCsv(csv);
  const header = table2[0];
  const typeCol = header.indexOf("type");
  const uaCol = header.indexOf("user_agent");
  check(uaCol >= 0, `the CSV has no user_agent column: ${header.join(",")}`);
  const data = table2.slice(1);
  check(data.some((r) => r[typeCol] === "login.failed"), "the CSV has no login.failed line");
  // A cell a spreadsheet would run as a formula is prefixed with "'".
  check(data.some((r) => r[uaCol] === evilUserAgent || r[uaCol] === `'${evilUserAgent}`),
    "the CSV does not hold the user agent");
  step(`export: ${name}, ${data.length} events`);
  checkListeners("after the export");

  // 9.
  await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });

  // 10. Sign out.
  await page.click("#sign-out");
  await page.waitForSelector("#token", { timeout: TIMEOUT });
  const after = (await context.cookies()).find((c) => c.name === COOKIE);
  check(!after || after.value === "", `the ${COOKIE} cookie survived signing out`);
  checkListeners("after signing out");
  step("signed out");

  console.log("audit page: ok");
} catch (e) {
  code = 1;
  const what = e instanceof Failure ? e.message : (e && e.stack ? e.stack : String(e));
  console.error(`audit page: FAILED: ${what}`);
  if (page) {
    const message = await page.evaluate(() => {
      const m = document.getElementById("message");
      return m ? m.textContent : null;
    }).catch(() => null);
    if (message) console.error(`audit page: #message says: ${message}`);
    console.error(`audit page: at ${page.url()}`);
    await page.screenshot({ path: `${shots}/audit-failure.png`, fullPage: true }).catch(() => {});
  }
  if (dialogs.length) console.error(`audit page: dialogs: ${JSON.stringify(dialogs)}`);
  if (pageErrors.length) console.error(`audit page: page errors: ${pageErrors.join(" | ")}`);
  if (cspViolations.length) console.error(`audit page: CSP violations: ${cspViolations.join(" | ")}`);
  for (const line of consoleLines.slice(-20)) console.error(`audit page: console ${line}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);
