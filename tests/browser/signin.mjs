// Signs in through authlog's pages in headless Chromium, as a person would:
// the authorization URL, the login form, the consent form, and the redirect
// back to the client. Prints {"redirect": URL, "csp_violations": [...]}.
// Usage: node signin.mjs CHROMIUM AUTH_URL USERNAME PASSWORD REDIRECT_PREFIX SCREENSHOT_DIR
import { chromium } from "playwright-core";

const [executablePath, authUrl, username, password, redirectPrefix, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const violations = [];
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
  // The client's redirect target is not running: catch the request the browser makes to it.
  const back = page.waitForRequest((r) => r.url().startsWith(redirectPrefix), { timeout: 20000 });
  await page.goto(authUrl);
  await page.screenshot({ path: `${shots}/login.png` });
  await page.fill("#username", username);
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(/\/oidc\/consent/), page.click("button[type=submit]")]);
  await page.screenshot({ path: `${shots}/consent.png` });
  await page.click("button[value=allow]");
  const request = await back;
  console.log(JSON.stringify({ redirect: request.url(), csp_violations: violations }));
} finally {
  await browser.close();
}
