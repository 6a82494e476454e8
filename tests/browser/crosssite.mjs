// A person signs in to a client application the way real users do: on the
// application's own site (a second origin, http://localhost:RP_PORT, another
// site than authlog's http://127.0.0.1:PORT), they click "Sign in", go through
// authlog's login and consent pages, come back to the application (which
// redeems the code itself), sign in again with the SSO session, and sign out
// with the application's RP-initiated logout form (a cross-site POST), then
// through a plain logout link (a cross-site GET and the confirmation page).
// Every step starts from the application's page, so the browser applies
// SameSite to authlog's cookies as it does for users.
//
// Prints one JSON object: what each step saw. Usage:
//   node crosssite.mjs CHROMIUM ISSUER RP_PORT CLIENT_ID CLIENT_SECRET USERNAME PASSWORD SHOTS
import { chromium } from "playwright-core";
import http from "node:http";
import crypto from "node:crypto";

const [executablePath, issuer, rpPort, clientId, clientSecret, username, password, shots] =
  process.argv.slice(2);
const rp = `http://localhost:${rpPort}`;
const redirectUri = `${rp}/cb`;
const seen = { steps: [], csp_violations: [], errors: [] };
const pending = new Map(); // state → PKCE verifier and nonce
let lastIdToken = null;
let lastTokens = null;

const b64url = (buf) => buf.toString("base64url");
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
    `<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

// The client application: a start page with a "Sign in" link, the callback
// that redeems the code with its secret, and a signed-in page with a logout form.
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, rp);
  try {
    if (url.pathname === "/") {
      const state = b64url(crypto.randomBytes(16));
      const verifier = b64url(crypto.randomBytes(32));
      const nonce = b64url(crypto.randomBytes(16));
      pending.set(state, { verifier, nonce });
      const challenge = b64url(crypto.createHash("sha256").update(verifier).digest());
      const auth = new URL(`${issuer}/oauth2/auth`);
      for (const [k, v] of Object.entries({
        response_type: "code", client_id: clientId, redirect_uri: redirectUri,
        scope: "openid email", state, nonce, code_challenge: challenge,
        code_challenge_method: "S256",
      })) auth.searchParams.set(k, v);
      res.writeHead(200, { "content-type": "text/html" });
      res.end(page("Example app", `<a id="signin" href="${escape(auth.href)}">Sign in</a>` +
        ` <a id="logout-link" href="${escape(`${issuer}/oauth2/sessions/logout`)}">Sign out (link)</a>`));
      return;
    }
    if (url.pathname === "/cb") {
      const state = url.searchParams.get("state");
      const p = pending.get(state);
      const code = url.searchParams.get("code");
      if (!p || !code) {
        res.writeHead(400, { "content-type": "text/html" });
        res.end(page("Sign-in failed", `<p id="error">${escape(url.search)}</p>`));
        return;
      }
      pending.delete(state);
      const r = await fetch(`${issuer}/oauth2/token`, {
        method: "POST",
        headers: {
          authorization: "Basic " + Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString("base64"),
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: redirectUri, code_verifier: p.verifier }),
      });
      const tokens = await r.json();
      if (r.status !== 200) {
        res.writeHead(502, { "content-type": "text/html" });
        res.end(page("Token exchange failed", `<p id="error">${escape(JSON.stringify(tokens))}</p>`));
        return;
      }
      lastTokens = tokens;
      lastIdToken = tokens.id_token;
      const claims = JSON.parse(Buffer.from(tokens.id_token.split(".")[1], "base64url"));
      res.writeHead(200, { "content-type": "text/html" });
      res.end(page("Signed in to Example app",
        `<p id="who">${escape(claims.sub)}</p><p id="nonce-ok">${claims.nonce === p.nonce}</p>` +
        `<form id="logout" method="post" action="${escape(`${issuer}/oauth2/sessions/logout`)}">` +
        `<input type="hidden" name="id_token_hint" value="${escape(tokens.id_token)}">` +
        `<input type="hidden" name="post_logout_redirect_uri" value="${escape(`${rp}/bye`)}">` +
        `<input type="hidden" name="state" value="bye-state">` +
        `<button type="submit">Sign out</button></form>`));
      return;
    }
    if (url.pathname === "/bye") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(page("Signed out of Example app", `<p id="bye">${escape(url.searchParams.get("state") ?? "")}</p>`));
      return;
    }
    res.writeHead(404);
    res.end();
  } catch (e) {
    seen.errors.push(String(e));
    res.writeHead(500);
    res.end(String(e));
  }
});
await new Promise((resolve) => server.listen(Number(rpPort), "127.0.0.1", resolve));

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The application is served on 127.0.0.1 too; "localhost" makes it another site.
    "--host-resolver-rules=MAP localhost 127.0.0.1"],
});
const step = (name, extra) => seen.steps.push({ name, ...extra });
try {
  for (const width of [1280, 375]) {
    const context = await browser.newContext({ viewport: { width, height: 900 } });
    const tab = await context.newPage();
    tab.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) seen.csp_violations.push(m.text()); });
    const shot = (name) => tab.screenshot({ path: `${shots}/${name}-${width}.png`, fullPage: true });

    // 1. Sign in, starting from the application's page.
    await tab.goto(`${rp}/`);
    await Promise.all([tab.waitForURL(/\/oidc\/login/), tab.click("#signin")]);
    await shot("login");
    await tab.fill("#username", username);
    await tab.fill("#password", password);
    await Promise.all([tab.waitForURL(/\/oidc\/consent|\/cb/), tab.click("button[type=submit]")]);
    const consented = /\/oidc\/consent/.test(tab.url());
    if (consented) {
      await shot("consent");
      await Promise.all([tab.waitForURL(/localhost:\d+\/cb/), tab.click("button[value=allow]")]);
    }
    const who = await tab.textContent("#who").catch(() => null);
    const error = who ? null : await tab.textContent("body");
    step("sign-in", { width, consented, who, nonce_ok: who ? await tab.textContent("#nonce-ok") : null, error });
    await shot("signed-in");
    if (!who) break;

    // 2. SSO: from the application's page again, straight back with a code.
    await tab.goto(`${rp}/`);
    await Promise.all([tab.waitForURL(/\/cb|\/oidc\/login/), tab.click("#signin")]);
    step("sso", { width, url_path: new URL(tab.url()).pathname, who: await tab.textContent("#who").catch(() => null) });

    // 3. RP-initiated logout: the application's form POSTs across sites.
    await Promise.all([tab.waitForURL(/\/bye/), tab.click("#logout button")]);
    step("logout-post", { width, state: await tab.textContent("#bye").catch(() => null) });
    await shot("signed-out");

    // 4. Signed out for real: signing in again asks for the password.
    await tab.goto(`${rp}/`);
    await Promise.all([tab.waitForURL(/\/oidc\/login|\/cb/), tab.click("#signin")]);
    step("after-logout", { width, url_path: new URL(tab.url()).pathname });
    if (/\/oidc\/login/.test(tab.url())) {
      await tab.fill("#username", username);
      await tab.fill("#password", password);
      await Promise.all([tab.waitForURL(/localhost:\d+\/cb/), tab.click("button[type=submit]")]);
      step("sign-in-again", { width, who: await tab.textContent("#who").catch(() => null) });
    }

    // 5. A plain logout link from the application (a cross-site GET, no hint):
    // authlog asks first, and the confirmation ends the session.
    await tab.goto(`${rp}/`);
    await Promise.all([tab.waitForURL(/\/oauth2\/sessions\/logout/), tab.click("#logout-link")]);
    await shot("logout-confirm");
    await tab.click("button[type=submit]");
    await tab.waitForLoadState();
    step("logout-confirmed", { width, text: (await tab.textContent("h1").catch(() => "")).trim() });
    await shot("logged-out");
    await tab.goto(`${rp}/`);
    await Promise.all([tab.waitForURL(/\/oidc\/login|\/cb/), tab.click("#signin")]);
    step("after-confirmed-logout", { width, url_path: new URL(tab.url()).pathname });
    await context.close();
  }
} catch (e) {
  seen.errors.push(String(e && e.stack || e));
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(seen));
