// Another add-on's origin under the same --addons-domain tries to plant its
// own session cookie on a sibling's (login CSRF): a page on it sets
// `addonhost_sso_<svc>` with `Domain=<addons domain>` (and the __Host- name,
// which a browser must refuse with a Domain), then the victim, signed in to
// the dashboard only, opens the sibling's dashboard page. Then the victim
// signs in to the add-on through the platform, as usual.
// Usage: node cookies.mjs PLATFORM_URL TOKEN APP ATTACHMENT SERVICE
//                         PLANTER_URL TARGET_URL SESSION_ID
// Prints one JSON line.
import { chromium } from "playwright-core";

const [base, token, app, attachment, service, planter, target, sessionId] = process.argv.slice(2);
const domain = new URL(base).hostname;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The test's own names and certificate: every name of the domain is the
    // TLS proxy on the loopback.
    `--host-resolver-rules=MAP ${domain} 127.0.0.1, MAP *.${domain} 127.0.0.1`,
    "--ignore-certificate-errors",
  ],
});
const report = {};
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(`${base}/login?next=/apps/${app}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${base}/apps/${app}`), page.click("#sign-in")]);

  // The sibling's page plants the attacker's session for the whole domain.
  await page.goto(planter);
  report.planted = await page.evaluate(({ service, sessionId, domain }) => {
    const name = `addonhost_sso_${service.replaceAll("-", "_")}`;
    for (const n of [name, `__Host-${name}`, `__Secure-${name}`]) {
      document.cookie = `${n}=${sessionId}; Domain=${domain}; Path=/; Secure; SameSite=Lax`;
    }
    return document.cookie;
  }, { service, sessionId, domain });

  const victim = await page.goto(target);
  report.target = { status: victim.status(), text: (await page.content()).slice(0, 600) };

  // The victim's own sign-in, through the platform.
  await page.goto(`${base}/apps/${app}`);
  await Promise.all([
    page.waitForNavigation({ url: (u) => !u.toString().includes("/myapps/"), timeout: 10000 }),
    page.click(`a.sso[href$="/addons/${attachment}"]`),
  ]);
  await page.waitForLoadState("load");
  report.sso = { url: page.url(), text: (await page.content()).slice(0, 600) };
  const origin = new URL(page.url()).origin;
  report.cookies = (await context.cookies(origin)).map((c) => ({
    name: c.name, domain: c.domain, secure: c.secure, httpOnly: c.httpOnly,
  }));
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
