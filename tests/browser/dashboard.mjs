// Signs in to the dashboard, opens an app, follows the kv add-on's SSO link
// and checks the add-on's own dashboard, in headless Chromium.
// Usage: node dashboard.mjs BASE_URL TOKEN APP SCREENSHOT_DIR
import { chromium } from "playwright-core";

const [base, token, app, shots] = process.argv.slice(2);
const fail = (msg) => {
  console.error(`browser test failed: ${msg}`);
  process.exit(1);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  await page.goto(`${base}/apps/${app}`);
  if (!page.url().includes("/login")) fail(`expected the sign-in page, got ${page.url()}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${base}/apps/${app}`), page.click("#sign-in")]);

  const name = await page.textContent("#app-name");
  if (name.trim() !== app) fail(`app page shows ${name}`);
  const addons = await page.textContent("#addons");
  if (!addons.includes("kv:mini") || !addons.includes("provisioned")) fail(`add-ons table: ${addons}`);
  // Values are masked until clicked.
  const value = page.locator("#config code.value").first();
  if (await value.isVisible()) fail("a config value is visible before it is clicked");
  await page.locator("#config summary").first().click();
  if (!(await value.isVisible())) fail("clicking did not reveal the value");
  await page.screenshot({ path: `${shots}/dashboard-app.png`, fullPage: true });

  // Single sign-on into the kv add-on's own dashboard, on its own origin.
  await Promise.all([
    page.waitForURL(/^http:\/\/kv\.localhost:\d+\/dashboard\/kv-/),
    page.click('a.sso[href$="/addons/KV"]'),
  ]);
  const ns = await page.textContent("#namespace");
  if (!ns.startsWith("kv-")) fail(`kv dashboard shows namespace ${ns}`);
  const user = await page.textContent("#user");
  if (user !== "owner@addonhost.local") fail(`kv dashboard shows user ${user}`);
  const keys = await page.textContent("#key-count");
  if (keys !== "1") fail(`kv dashboard shows ${keys} keys, expected 1`);
  const kvOrigin = new URL(page.url()).origin;
  const cookies = await page.context().cookies(`${kvOrigin}/`);
  const session = cookies.find((c) => c.name === "addonhost_sso_kv");
  if (!session || !session.httpOnly || session.sameSite !== "Lax") fail(`session cookie: ${JSON.stringify(session)}`);
  if (!cookies.find((c) => c.name === "heroku-nav-data")) fail("no heroku-nav-data cookie");
  // The platform's session cookie never went to the add-on's origin.
  if (cookies.find((c) => c.name === "addonhost_session")) fail("the dashboard session cookie reached the add-on's origin");
  await page.screenshot({ path: `${shots}/addon-dashboard.png`, fullPage: true });
  console.log(`browser: signed in, opened ${app}, SSO into ${ns} as ${user}`);
} finally {
  await browser.close();
}
