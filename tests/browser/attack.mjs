// A hostile add-on's pages, opened in headless Chromium by a user signed in
// to the dashboard: each page's script tries to read platform pages and to
// make a state-changing request (see tests/plugins/hostile, ATTACK_PAGE).
// Prints one JSON line: what each page's script managed, by URL.
// Usage: node attack.mjs PLATFORM_URL TOKEN APP ATTACHMENT URL...
// URL is an add-on page to open directly; "sso" follows the attachment's SSO
// link on the app page instead (landing on the add-on's own dashboard);
// "raw:URL" opens URL and reports the page's text as it is (no script
// expected). The report's "cookies" entry names the cookies the browser
// holds for the platform's origin (so a test knows they were there to send).
import { chromium } from "playwright-core";

const [base, token, app, attachment, ...targets] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const report = {};
try {
  const page = await browser.newPage();
  await page.goto(`${base}/login?next=/apps/${app}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${base}/apps/${app}`), page.click("#sign-in")]);

  const waitResult = async () => {
    // The script needs a moment; where scripts cannot run it stays "not run".
    try {
      await page.waitForFunction(
        () => document.getElementById("result")?.textContent !== "not run", null, { timeout: 4000 });
    } catch (_) { /* stayed "not run" */ }
    const el = await page.$("#result");
    return el ? await el.textContent() : `(no result element; page: ${(await page.content()).slice(0, 300)})`;
  };
  for (const target of targets) {
    if (target === "sso") {
      await page.goto(`${base}/apps/${app}`);
      await Promise.all([
        page.waitForNavigation({ url: (u) => !u.toString().includes("/myapps/"), timeout: 10000 }),
        page.click(`a.sso[href$="/addons/${attachment}"]`),
      ]);
      // The auto-submitted form lands after one more navigation.
      await page.waitForLoadState("load");
      await page.waitForTimeout(300);
      report[`sso -> ${page.url()}`] = await waitResult();
    } else if (target.startsWith("raw:")) {
      const url = target.slice(4);
      await page.goto(url);
      report[target] = await page.evaluate(() => document.body ? document.body.innerText : "");
    } else {
      await page.goto(target);
      report[target] = await waitResult();
    }
  }
  report["cookies"] = (await page.context().cookies(base)).map((c) => c.name).join(",");
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
